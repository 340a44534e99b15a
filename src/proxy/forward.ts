/**
 * The gated reverse proxy of PROTOCOL.md section 5: streams request and response bodies
 * through a pooled undici client, with the contract's header hygiene.
 * @module
 */
import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errors as undiciErrors, Pool, type Dispatcher } from 'undici';
import { GateError, REFUSAL_HEADER } from '../errors.js';
import { DEFAULT_HEADER_POLICY, HOP_BY_HOP, upstreamRawHeaders, type ForwardIdentity, type HeaderPolicy } from './headers.js';

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

/** An upstream answer streamed to the client: undici pauses while the client reads slowly. */
class UpstreamBody extends Readable {
  wake: (() => void) | undefined;
  override _read(): void {
    this.wake?.();
  }
}

/**
 * One proxied request as an undici dispatch handler: no AbortController, no response stream
 * for small answers, no promise. Answers of a declared length up to {@link BUFFER_BELOW_BYTES}
 * are collected and sent with their headers in one write; others stream, with the status held
 * until the first byte (or the end) so an upstream failing before any byte still gets a
 * contract 502/504.
 */
class ProxyExchange implements Dispatcher.DispatchHandler {
  private abortUpstream: ((err?: Error) => void) | undefined;
  private status = 0;
  private headers: Record<string, string | string[]> | undefined;
  private buffered = false;
  private chunks: Buffer[] = [];
  private stream: UpstreamBody | undefined;
  private sent = false;
  private finished = false;

  constructor(
    private readonly reply: FastifyReply,
    private readonly limiter: ByteLimit | undefined,
  ) {}

  /** The client went away before the answer was complete: stop the upstream exchange. */
  readonly onClientClose = (): void => {
    if (!this.finished && !this.reply.raw.writableFinished) this.abortUpstream?.(new undiciErrors.RequestAbortedError());
  };

  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort;
    if (this.reply.raw.destroyed) abort(new undiciErrors.RequestAbortedError());
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    this.status = statusCode;
    this.headers = downstreamHeaders(rawHeaders);
    const length = this.headers['content-length'];
    this.buffered = typeof length === 'string' && Number(length) <= BUFFER_BELOW_BYTES;
    if (!this.buffered) {
      this.stream = new UpstreamBody();
      this.stream.wake = resume;
    }
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.buffered) {
      this.chunks.push(chunk);
      return true;
    }
    const stream = this.stream!;
    if (!this.sent) this.commit(stream);
    return stream.push(chunk);
  }

  onComplete(): void {
    this.finished = true;
    if (this.buffered) {
      const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      this.chunks = [];
      this.commit(body);
      return;
    }
    const stream = this.stream!;
    if (!this.sent) this.commit(stream);
    stream.push(null);
  }

  onError(err: Error): void {
    this.finished = true;
    if (this.sent) {
      // Status and headers are out: all that is left is to cut the answer short.
      this.stream?.destroy(err);
      return;
    }
    this.sent = true;
    this.reply.send(this.limiter?.exceeded ? new GateError('body_too_large', { cause: err }) : upstreamError(err));
  }

  private commit(body: Buffer | UpstreamBody): void {
    this.sent = true;
    this.reply.code(this.status).headers(this.headers!).send(body);
  }
}

/** Upstream response headers (raw lines) minus hop-by-hop ones and those named in `Connection`. */
function downstreamHeaders(raw: Buffer[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  // Every Connection line counts; hop-by-hop names are skipped as they come, so that the common
  // answer (Connection: keep-alive, Keep-Alive) deletes nothing and the object keeps its shape.
  let named: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1').toLowerCase();
    const value = raw[i + 1]!.toString('latin1');
    if (HOP_BY_HOP.has(name)) {
      if (name === 'connection') named = named === undefined ? value : `${named},${value}`;
      continue;
    }
    // Only the gate's own refusals carry it (the client's sign that nothing was forwarded).
    if (name === REFUSAL_HEADER) continue;
    const prior = out[name];
    if (prior === undefined) out[name] = value;
    else if (Array.isArray(prior)) prior.push(value);
    else out[name] = [prior, value];
  }
  if (named !== undefined) {
    for (const n of named.split(',')) {
      const k = n.trim().toLowerCase();
      if (k !== '' && out[k] !== undefined) delete out[k];
    }
  }
  return out;
}

/** Forwards gated requests to one upstream. */
export class Forwarder {
  private readonly pool: Pool;
  private readonly basePath: string;
  private readonly policy: HeaderPolicy;
  /** Client header spellings already judged under {@link policy}. */
  private readonly verdicts = new Map<string, boolean>();

  constructor(private readonly opts: ForwarderOptions) {
    const url = new URL(opts.upstreamUrl);
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.policy = opts.headers ?? DEFAULT_HEADER_POLICY;
    this.pool = new Pool(url.origin, {
      connections: opts.connections ?? 128,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connectTimeout: Math.min(opts.timeoutMs, 10_000),
    });
  }

  /**
   * Sends `request` upstream and answers `reply` with the upstream's answer, or a 413/502/504
   * problem; returns at once (the answer is sent from undici's callbacks).
   */
  forward(request: FastifyRequest, reply: FastifyReply, who: ForwardIdentity): void {
    const incoming = request.headers;
    const declared = incoming['content-length'];
    if (declared !== undefined && Number(declared) > this.opts.maxBodyBytes) {
      throw new GateError('body_too_large', { detail: `content-length ${declared} over ${this.opts.maxBodyBytes}` });
    }
    const hasBody = declared !== undefined ? Number(declared) > 0 : incoming['transfer-encoding'] !== undefined;
    let limiter: ByteLimit | undefined;
    if (hasBody) {
      limiter = new ByteLimit(this.opts.maxBodyBytes);
      request.raw.pipe(limiter);
    }
    const exchange = new ProxyExchange(reply, limiter);
    reply.raw.once('close', exchange.onClientClose);
    const xff = incoming['x-forwarded-for'];
    this.pool.dispatch(
      {
        method: request.method as Dispatcher.HttpMethod,
        path: this.basePath + request.url,
        // clientAddress is the signed x-gate-fwd-addr in forwarded mode, never nginx's address.
        headers: upstreamRawHeaders(
          request.raw.rawHeaders,
          incoming.connection,
          typeof xff === 'string' ? xff : undefined,
          who,
          request.clientAddress || request.socket.remoteAddress,
          this.policy,
          this.verdicts,
        ),
        body: limiter ?? null,
      },
      exchange,
    );
  }

  /** Closes upstream connections. */
  async close(): Promise<void> {
    await this.pool.close();
  }
}

function upstreamError(err: unknown): GateError {
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.ConnectTimeoutError || err instanceof undiciErrors.BodyTimeoutError) {
    return new GateError('upstream_timeout', { cause: err, detail: (err as Error).message });
  }
  return new GateError('upstream_unavailable', { cause: err, detail: (err as Error)?.message });
}
