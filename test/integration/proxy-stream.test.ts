/**
 * Upstream answers the gate streams rather than buffers (section 5; src/proxy/forward.ts): a
 * declared length over 64 KiB or no declared length (chunked) arrive whole and byte-identical,
 * hop-by-hop headers of the answer (also those named in its Connection) are dropped, an upstream
 * failing after its first bytes cuts the answer short instead of completing it, a client that
 * goes away mid-answer ends the upstream exchange, and a slow reader holds the upstream back
 * (backpressure) instead of the gate buffering the whole answer.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request, type Agent } from 'undici';
import { GateClient, type Challenge } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, tlsAgent } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';

const P = '/.agent-gate';
const MiB = 1024 * 1024;
/** Deterministic bytes, so a reordered or dropped piece shows in the hash. */
const BODY = Buffer.alloc(4 * MiB, 0);
for (let i = 0; i < BODY.length; i += 4) BODY.writeUInt32BE(i, i);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let fx: Fixtures;
let gw: RunningGate;
let upstream: Server;
let a: Agent;
let token: string;
/** What the upstream saw of each exchange, by path. */
const ended = new Map<string, { closedEarly: boolean; bytes: number }>();

function answer(req: IncomingMessage, res: ServerResponse): void {
  const path = req.url ?? '';
  const seen = { closedEarly: false, bytes: 0 };
  ended.set(path, seen);
  res.on('close', () => (seen.closedEarly = !res.writableFinished));
  if (path === '/big') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(BODY.length), connection: 'x-hop', 'x-hop': '1', 'x-kept': 'yes' });
    res.end(BODY);
  } else if (path === '/two-connection-lines') {
    // Two Connection lines, the second naming a header: every line's options count.
    res.writeHead(200, ['content-type', 'text/plain', 'connection', 'keep-alive', 'connection', 'x-hop2', 'x-hop2', '1', 'x-kept', 'yes', 'content-length', '2']);
    res.end('ok');
  } else if (path === '/chunked') {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    let off = 0;
    const next = () => {
      if (off >= BODY.length) return void res.end();
      res.write(BODY.subarray(off, off + 300_000));
      off += 300_000;
      setTimeout(next, 2);
    };
    next();
  } else if (path === '/fails-midway') {
    res.writeHead(200, { 'content-length': String(BODY.length) });
    res.write(BODY.subarray(0, 200_000), () => setTimeout(() => req.socket.destroy(), 50));
  } else if (path.startsWith('/endless')) {
    // Writes for as long as the gate takes the bytes (or until it goes away), counting them.
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const pump = () => {
      for (;;) {
        if (res.destroyed) return;
        seen.bytes += 64 * 1024;
        if (!res.write(BODY.subarray(0, 64 * 1024))) break;
      }
      res.once('drain', pump);
    };
    pump();
  } else {
    res.writeHead(404).end();
  }
}

beforeAll(async () => {
  fx = await makeFixtures();
  upstream = createServer(answer);
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const port = (upstream.address() as { port: number }).port;
  gw = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: `http://127.0.0.1:${port}`, GATE_UPSTREAM_TIMEOUT_MS: '5000' }));
  a = tlsAgent(fx, fx.agents.p256);
  const signer = new GateClient({ baseUrl: 'https://127.0.0.1:1', cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  const ch = (await call(a, `${gw.url}${P}/v1/challenge`, { method: 'POST' })).json() as unknown as Challenge;
  const tok = await call(a, `${gw.url}${P}/v1/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ challenge_id: ch.challenge_id, proof: await signer.signProof(ch) }) });
  await signer.close();
  expect(tok.status).toBe(200);
  token = tok.json().access_token as string;
}, 60_000);

afterAll(async () => {
  await a?.close();
  await gw?.close();
  upstream?.closeAllConnections();
  await new Promise<void>((r) => upstream?.close(() => r()));
});

const open = (path: string) => request(`${gw.url}${path}`, { dispatcher: a, headers: { authorization: `Bearer ${token}` } });

describe('streamed upstream answers', () => {
  it('over 64 KiB with a declared length: whole and byte-identical; hop-by-hop and Connection-named headers dropped', async () => {
    const res = await open('/big');
    const body = Buffer.from(await res.body.arrayBuffer());
    expect(res.statusCode).toBe(200);
    expect(body.length).toBe(BODY.length);
    expect(sha(body)).toBe(sha(BODY));
    expect(res.headers['x-kept']).toBe('yes');
    expect(res.headers['x-hop']).toBeUndefined();
    expect(res.headers['content-length']).toBe(String(BODY.length));
  });

  it('a header named in a second Connection line of the answer is dropped too', async () => {
    const res = await open('/two-connection-lines');
    expect(await res.body.text()).toBe('ok');
    expect([res.statusCode, res.headers['x-kept'], res.headers['x-hop2']]).toEqual([200, 'yes', undefined]);
  });

  it('chunked (no declared length), written in pieces: whole and byte-identical', async () => {
    const res = await open('/chunked');
    const body = Buffer.from(await res.body.arrayBuffer());
    expect(res.statusCode).toBe(200);
    expect(sha(body)).toBe(sha(BODY));
  });

  it('an upstream failing after its first bytes: the answer is cut short, never completed', async () => {
    const res = await open('/fails-midway');
    expect(res.statusCode).toBe(200);
    await expect(res.body.arrayBuffer()).rejects.toThrow();
    // The gate still serves.
    const again = await open('/big');
    expect(again.statusCode).toBe(200);
    await again.body.dump();
  });

  it('a slow reader holds the upstream back; a client going away ends the upstream exchange', async () => {
    const res = await open('/endless-1');
    expect(res.statusCode).toBe(200);
    // Read a little, then stop reading: the gate must stop reading the upstream too.
    await new Promise<void>((resolve) => {
      let got = 0;
      res.body.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got > MiB) {
          res.body.pause();
          resolve();
        }
      });
    });
    const seen = ended.get('/endless-1')!;
    // Until the buffers between are full the upstream still writes (longer on a busy machine):
    // wait for its count to hold still for 300 ms, at most 10 s, then watch it for a second.
    const deadline = Date.now() + 10_000;
    let stalledAt = seen.bytes;
    for (;;) {
      await sleep(300);
      if (seen.bytes === stalledAt || Date.now() > deadline) break;
      stalledAt = seen.bytes;
    }
    await sleep(1000);
    expect(seen.bytes - stalledAt, 'bytes the upstream wrote while the client read nothing').toBeLessThan(MiB);
    expect(stalledAt, 'what the gate and the socket buffers hold').toBeLessThan(64 * MiB);
    expect(seen.closedEarly).toBe(false);
    // The client goes away mid-answer.
    res.body.destroy();
    await a.destroy();
    a = tlsAgent(fx, fx.agents.p256);
    await waitFor(() => seen.closedEarly, 5000, 'the upstream exchange to end');
  });
});
