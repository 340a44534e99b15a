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

/** One request through `dispatcher`; the body is read whole. */
export async function call(dispatcher: Agent, url: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<Res> {
  const r = await request(url, { dispatcher, method: (init.method ?? 'GET') as 'GET', headers: init.headers, body: init.body });
  const text = await r.body.text();
  return { status: r.statusCode, headers: r.headers, text, json: () => JSON.parse(text) as Record<string, unknown> };
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

/** Writes `raw` bytes over a fresh mTLS connection and reads the answer until close. */
export async function rawRequest(baseUrl: string, fx: Fixtures, who: KeyAndCert | undefined, raw: string | Buffer): Promise<{ status: number; head: string; body: string }> {
  const { connect } = await import('node:tls');
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port), ca: fx.ca.certPem, cert: who?.certPem, key: who?.keyPem, servername: 'localhost' });
    const chunks: Buffer[] = [];
    s.setTimeout(10_000, () => s.destroy(new Error('raw request timed out')));
    s.on('secureConnect', () => s.write(raw));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const i = text.indexOf('\r\n\r\n');
      const head = i === -1 ? text : text.slice(0, i);
      let body = i === -1 ? '' : text.slice(i + 4);
      if (/transfer-encoding: chunked/i.test(head)) body = body.replace(/^[0-9a-f]+\r\n/i, '').replace(/\r\n0\r\n\r\n$/, '');
      resolve({ status: Number(head.split(' ')[1]), head, body });
    });
  });
}
