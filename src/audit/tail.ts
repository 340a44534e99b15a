/**
 * Reads the last lines of a file backwards, so reopening a large audit trail costs what its
 * tail costs, not what the whole file costs.
 * @module
 */
import { open } from 'node:fs/promises';

const CHUNK = 64 * 1024;

/** The last lines of a file, in file order, without newlines. */
export interface Tail {
  /** Lines from the one `stop` accepted (or the first line of the file) to the last. */
  lines: Buffer[];
  /** Whether `lines[0]` is the first line of the file. */
  reachedStart: boolean;
  /** Whether the file ends with a newline (a crash mid-write leaves a line without one). */
  endsWithNewline: boolean;
  size: number;
}

/**
 * Reads `path` from the end, line by line, until `stop(line)` is true or the file starts.
 * Throws when more than `maxBytes` would have to be read, or `ENOENT` when there is no file.
 */
export async function readTail(path: string, stop: (line: Buffer) => boolean, maxBytes: number): Promise<Tail> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    if (size === 0) return { lines: [], reachedStart: true, endsWithNewline: true, size };
    const last = Buffer.alloc(1);
    await fh.read(last, 0, 1, size - 1);
    const endsWithNewline = last[0] === 0x0a;
    const lines: Buffer[] = [];
    let pos = endsWithNewline ? size - 1 : size;
    // Bytes between `pos` and the start of the line found last: a line not yet complete.
    let carry = Buffer.alloc(0);
    for (;;) {
      if (size - pos > maxBytes) throw new Error(`more than ${maxBytes} bytes to read back from the end of ${path}`);
      const start = Math.max(0, pos - CHUNK);
      const chunk = Buffer.alloc(pos - start);
      if (chunk.length > 0) await fh.read(chunk, 0, chunk.length, start);
      let data = carry.length > 0 ? Buffer.concat([chunk, carry]) : chunk;
      pos = start;
      let nl = data.lastIndexOf(0x0a);
      while (nl >= 0) {
        const line = data.subarray(nl + 1);
        lines.unshift(line);
        if (stop(line)) return { lines, reachedStart: false, endsWithNewline, size };
        data = data.subarray(0, nl);
        nl = data.lastIndexOf(0x0a);
      }
      if (pos === 0) {
        lines.unshift(data);
        return { lines, reachedStart: true, endsWithNewline, size };
      }
      carry = Buffer.from(data);
    }
  } finally {
    await fh.close();
  }
}
