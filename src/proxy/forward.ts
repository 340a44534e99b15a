/**
 * The gated reverse proxy of PROTOCOL.md section 5: streams request and response bodies
 * through a pooled undici client, with the contract's header hygiene.
 * @module
 */
import { Transform, type TransformCallback } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errors as undiciErrors, Pool } from 'undici';
import { GateError } from '../errors.js';
import { DEFAULT_HEADER_POLICY, HOP_BY_HOP, upstreamRequestHeaders, type ForwardIdentity, type HeaderPolicy } from './headers.js';

/** Options of {@link Forwarder}. */
export interface ForwarderOptions {
  /** `GATE_UPSTREAM_URL`. */
  upstreamUrl: string;
  timeoutMs: number;
  maxBodyBytes: number;
  /** Most connections to the upstream. */
  connections?: number;
  /** `GATE_PROXY_PASS_HEADERS` and `GATE_PROXY_XFF`; default: strip all, replace. */
  headers?: HeaderPolicy;
}

/** Response headers minus hop-by-hop ones. */
function downstreamHeaders(h: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const named = new Set<string>();
  const conn = h.connection;
  if (typeof conn === 'string') for (const n of conn.split(',')) named.add(n.trim().toLowerCase());
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(h)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Upstream answers with a declared length below this are buffered rather than streamed. */
const BUFFER_BELOW_BYTES = 64 * 1024;

/** Counts bytes and fails the stream past the limit. */
class ByteLimit extends Transform {
  exceeded = false;
  private seen = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      this.exceeded = true;
      cb(new GateError('body_too_large', { detail: `body over ${this.limit} bytes` }));
      return;
    }
    cb(null, chunk);
  }
}

/** Forwards gated requests to one upstream. */
export class Forwarder {
  private readonly pool: Pool;
  private readonly basePath: string;

  constructor(private readonly opts: ForwarderOptions) {
    const url = new URL(opts.upstreamUrl);
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.pool = new Pool(url.origin, {
      connections: opts.connections ?? 128,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connectTimeout: Math.min(opts.timeoutMs, 10_000),
    });
  }

  /** Sends `request` upstream and streams the answer into `reply`. */
  async forward(request: FastifyRequest, reply: FastifyReply, who: ForwardIdentity): Promise<FastifyReply> {
    const declared = request.headers['content-length'];
    if (declared !== undefined && Number(declared) > this.opts.maxBodyBytes) {
      throw new GateError('body_too_large', { detail: `content-length ${declared} over ${this.opts.maxBodyBytes}` });
    }
    const hasBody = declared !== undefined ? Number(declared) > 0 : request.headers['transfer-encoding'] !== undefined;
    let limiter: ByteLimit | undefined;
    if (hasBody) {
      limiter = new ByteLimit(this.opts.maxBodyBytes);
      request.raw.pipe(limiter);
    }
    const abort = new AbortController();
    const onClose = () => {
      if (!reply.raw.writableFinished) abort.abort();
    };
    reply.raw.once('close', onClose);
    try {
      const res = await this.pool.request({
        method: request.method as 'GET',
        path: this.basePath + request.url,
        // clientAddress is the signed x-gate-fwd-addr in forwarded mode, never nginx's address.
        headers: upstreamRequestHeaders(request.headers, who, request.clientAddress || request.socket.remoteAddress, this.opts.headers ?? DEFAULT_HEADER_POLICY),
        body: limiter ?? null,
        signal: abort.signal,
      });
      const length = Number(res.headers['content-length']);
      if (length <= BUFFER_BELOW_BYTES) {
        // Small answers (most API responses) are read whole and written with their headers in
        // one TLS record: streaming them costs a write (and a record) per piece.
        const body = Buffer.from(await res.body.arrayBuffer());
        reply.code(res.statusCode).headers(downstreamHeaders(res.headers));
        return reply.send(body);
      }
      // Wait for the first bytes (or the end) before committing the status: an upstream that
      // fails after its headers but before any byte is relayed still gets a contract 502/504.
      await firstChunkOrEnd(res.body);
      reply.code(res.statusCode).headers(downstreamHeaders(res.headers));
      return reply.send(res.body);
    } catch (err) {
      if (limiter?.exceeded) throw new GateError('body_too_large', { cause: err });
      throw upstreamError(err);
    }
  }

  /** Closes upstream connections. */
  async close(): Promise<void> {
    await this.pool.close();
  }
}

function firstChunkOrEnd(body: NodeJS.ReadableStream & { readableLength?: number; readableEnded?: boolean }): Promise<void> {
  if ((body.readableLength ?? 0) > 0 || body.readableEnded) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: unknown) => {
      body.off('readable', onReadable);
      body.off('end', onEnd);
      body.off('error', done);
      if (err) reject(err);
      else resolve();
    };
    const onReadable = () => done();
    const onEnd = () => done();
    body.once('readable', onReadable);
    body.once('end', onEnd);
    body.once('error', done);
  });
}

function upstreamError(err: unknown): GateError {
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.ConnectTimeoutError || err instanceof undiciErrors.BodyTimeoutError) {
    return new GateError('upstream_timeout', { cause: err, detail: (err as Error).message });
  }
  return new GateError('upstream_unavailable', { cause: err, detail: (err as Error)?.message });
}
