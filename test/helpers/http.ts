import { connect } from 'node:tls';
import { Agent, request } from 'undici';
import type { KeyAndCert } from '../../src/pki/index.js';
import type { Fixtures } from './fixtures.js';

/** An undici dispatcher presenting `who` (or no certificate) to a gate trusted via the fixture CA. */
export function tlsAgent(fx: Fixtures, who?: KeyAndCert, opts: { resumeSessions?: boolean } = {}): Agent {
  return new Agent({
    connect: {
      ca: fx.ca.certPem,
      cert: who?.certPem,
      key: who?.keyPem,
      servername: 'localhost',
      rejectUnauthorized: true,
      ...(opts.resumeSessions === false ? { maxCachedSessions: 0 } : {}),
    },
  });
}

/** A response, fully read. */
export interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => Record<string, unknown>;
}

/** One request through `dispatcher` (header values may repeat); the body is read whole. */
export async function call(dispatcher: Agent, url: string, init: { method?: string; headers?: Record<string, string | string[]>; body?: string | Buffer } = {}): Promise<Res> {
  const r = await request(url, { dispatcher, method: (init.method ?? 'GET') as 'GET', headers: init.headers, body: init.body });
  const text = await r.body.text();
  return { status: r.statusCode, headers: r.headers, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

/** An answer with its body parsed when it is a JSON object, and its problem `code` if any. */
export interface Sent extends Res {
  body?: Record<string, unknown>;
  code?: string;
}

/** {@link call}, with the answer's JSON body and problem code read up front. */
export async function send(dispatcher: Agent, url: string, init: Parameters<typeof call>[2] = {}): Promise<Sent> {
  const res = await call(dispatcher, url, init);
  let body: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = JSON.parse(res.text);
    body = parsed !== null && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    body = undefined;
  }
  return { ...res, body, code: typeof body?.code === 'string' ? body.code : undefined };
}

/** POST JSON. */
export function postJson(dispatcher: Agent, url: string, body: unknown): Promise<Res> {
  return call(dispatcher, url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

/** Asserts-friendly view of a problem+json refusal. */
export function problemOf(res: Res): { status: number; code: unknown; type: unknown; instance: unknown; contentType: unknown } {
  const j = res.json();
  return { status: res.status, code: j.code, type: j.type, instance: j.instance, contentType: res.headers['content-type'] };
}

/** What {@link tlsExchange} read: the answer as sent (a chunked body left as is) and the TLS session. */
export interface TlsExchange {
  status: number;
  head: string;
  body: string;
  /** Whether the connection resumed the session it was given. */
  reused: boolean;
  protocol: string | null;
  /** The first session ticket the server sent on this connection. */
  session: Buffer | undefined;
}

/** Where and how {@link tlsExchange} connects; `cert` may be a PEM chain, leaf first. */
export interface TlsExchangeOptions {
  ca: string;
  cert?: string;
  key?: string;
  /** A ticket to resume. */
  session?: Buffer;
  timeoutMs?: number;
}

/**
 * Writes `raw` bytes over a fresh TLS connection to `to` (a URL or host and port, SNI
 * localhost) and reads the answer until the server closes.
 */
export function tlsExchange(to: string | { host: string; port: number }, opts: TlsExchangeOptions, raw: string | Buffer): Promise<TlsExchange> {
  const { host, port } = typeof to === 'string' ? { host: new URL(to).hostname, port: Number(new URL(to).port) } : to;
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, ca: opts.ca, cert: opts.cert, key: opts.key, servername: 'localhost', ...(opts.session ? { session: opts.session } : {}) });
    const chunks: Buffer[] = [];
    let ticket: Buffer | undefined;
    let reused = false;
    let protocol: string | null = null;
    s.setTimeout(opts.timeoutMs ?? 10_000, () => s.destroy(new Error('raw request timed out')));
    s.on('session', (t: Buffer) => (ticket ??= t));
    s.on('secureConnect', () => {
      reused = s.isSessionReused();
      protocol = s.getProtocol();
      s.write(raw);
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const i = text.indexOf('\r\n\r\n');
      const head = i === -1 ? text : text.slice(0, i);
      resolve({ status: Number(head.split(' ')[1]), head, body: i === -1 ? '' : text.slice(i + 4), reused, protocol, session: ticket });
    });
  });
}

/** The raw bytes of `POST /.agent-gate/v1/challenge` on a connection that closes after it. */
export const RAW_CHALLENGE = 'POST /.agent-gate/v1/challenge HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';

/** The `code` of a problem+json body, if it has one. */
export function codeIn(body: string): string | undefined {
  return /"code":"([a-z_]+)"/.exec(body)?.[1];
}

/** Writes `raw` bytes over a fresh mTLS connection and reads the answer until close (a chunked body de-chunked). */
export async function rawRequest(baseUrl: string, fx: Fixtures, who: KeyAndCert | undefined, raw: string | Buffer): Promise<{ status: number; head: string; body: string }> {
  const { status, head, body } = await tlsExchange(baseUrl, { ca: fx.ca.certPem, cert: who?.certPem, key: who?.keyPem }, raw);
  if (!/transfer-encoding: chunked/i.test(head)) return { status, head, body };
  return { status, head, body: body.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '') };
}
