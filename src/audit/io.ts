/**
 * Appending that survives failures half-way: what was not written is written next time, from
 * the first unwritten byte, so a retry never duplicates or tears a line.
 * @module
 */
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Bytes serialized (so already part of the chain) but not yet fully written. */
export interface Carry {
  bytes: Buffer;
  offset: number;
  records: number;
  /** Checkpoint lines: the checkpoint's seq. */
  seq?: number;
}

/** Writes what is left of `c`; after a failure, the next call resumes at the first unwritten byte. */
export async function writeAll(fh: FileHandle, c: Carry): Promise<void> {
  while (c.offset < c.bytes.length) {
    const { bytesWritten } = await fh.write(c.bytes, c.offset, c.bytes.length - c.offset);
    c.offset += bytesWritten;
  }
}

/** Makes a new file's directory entry durable, not only its contents. */
export async function syncDir(file: string): Promise<void> {
  const dh = await open(dirname(file), 'r');
  try {
    await dh.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the data itself is still synced.
  } finally {
    await dh.close();
  }
}
