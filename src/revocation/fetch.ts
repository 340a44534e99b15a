import { Agent, request } from 'undici';

/** Options of one bounded HTTP exchange with a revocation source. */
export interface FetchOptions {
  method: 'GET' | 'POST';
  body?: Buffer;
  contentType?: string;
  timeoutMs: number;
  maxBytes: number;
}

/**
 * One HTTP(S) exchange with a deadline over the whole exchange and a size cap, so a slow or
 * huge answer from a revocation source cannot hold a request or the heap hostage.
 */
export async function fetchBounded(dispatcher: Agent, url: string, o: FetchOptions): Promise<Buffer> {
  const signal = AbortSignal.timeout(o.timeoutMs);
  const res = await request(url, {
    dispatcher,
    method: o.method,
    body: o.body,
    headers: o.contentType ? { 'content-type': o.contentType } : undefined,
    signal,
    headersTimeout: o.timeoutMs,
    bodyTimeout: o.timeoutMs,
    maxRedirections: 0,
  } as Parameters<typeof request>[1]);
  if (res.statusCode !== 200) {
    res.body.destroy();
    throw new Error(`HTTP ${res.statusCode} from ${new URL(url).host}`);
  }
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > o.maxBytes) {
    res.body.destroy();
    throw new Error(`answer of ${declared} bytes over the ${o.maxBytes}-byte cap`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += (chunk as Buffer).length;
    if (total > o.maxBytes) {
      res.body.destroy();
      throw new Error(`answer over the ${o.maxBytes}-byte cap`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}
