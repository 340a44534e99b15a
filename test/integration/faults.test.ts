/**
 * Faults around the gate, each with the contract's answer and a generous recovery bound:
 * Redis slow, black-holed, resetting, killed during a storm; the upstream down, slow or
 * resetting; SIGTERM during traffic on a real `serve` process; clock skew between instances.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Agent } from 'undici';
import { GateClient, type Challenge } from '../../src/client/index.js';
import { generateSigningJwk } from '../../src/tokens/index.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, postJson, tlsAgent, type Res } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { startRedis } from '../helpers/redis.js';
import { spawnServe } from '../helpers/serve.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const P = '/.agent-gate';

let fx: Fixtures;
/** One token-signing key for every gate here, as instances of one deployment share it. */
let signingJwk: string;

beforeAll(async () => {
  fx = await makeFixtures();
  signingJwk = JSON.stringify(await generateSigningJwk());
});

/** A signer for `who` (proofs only; its own connection pool is never used). */
function signerFor(who: KeyAndCert): GateClient {
  return new GateClient({ baseUrl: 'https://127.0.0.1:1', cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
}

/** The code of a problem+json answer, or the first bytes of anything else. */
function codeOf(res: Res): string {
  try {
    return String(res.json().code);
  } catch {
    return res.text.slice(0, 80);
  }
}

function expectProblem(res: Res, status: number, code: string): void {
  expect({ status: res.status, code: codeOf(res) }).toEqual({ status, code });
  expect(res.headers['content-type']).toBe('application/problem+json');
}

/** One challenge → proof → token flow against `url`; stops at the first refusal. */
async function flow(a: Agent, url: string, signer: GateClient, tokenUrl = url): Promise<{ challenge: Res; token?: Res; cid?: string; body?: string }> {
  const challenge = await call(a, `${url}${P}/v1/challenge`, { method: 'POST' });
  if (challenge.status !== 201) return { challenge };
  const ch = challenge.json() as unknown as Challenge;
  const body = JSON.stringify({ challenge_id: ch.challenge_id, proof: await signer.signProof(ch) });
  const token = await call(a, `${tokenUrl}${P}/v1/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  return { challenge, token, cid: ch.challenge_id, body };
}

/** The token of one whole flow of fx.agents.p256 over `a` against `url`, which must succeed. */
async function p256Token(a: Agent, url: string): Promise<string> {
  const signer = signerFor(fx.agents.p256);
  const f = await flow(a, url, signer);
  await signer.close();
  expect(f.token?.status).toBe(200);
  return f.token!.json().access_token as string;
}

/** Polls whole flows until one yields a token; returns how long that took. */
async function recovery(a: Agent, url: string, signer: GateClient, withinMs: number, what: string): Promise<number> {
  const t0 = Date.now();
  await waitFor(async () => (await flow(a, url, signer)).token?.status === 200, withinMs, what, 100);
  return Date.now() - t0;
}

async function adminReadyz(g: { adminUrl: string }): Promise<number> {
  return (await fetch(`${g.adminUrl}/readyz`)).status;
}

// ---------------------------------------------------------------------------------------------
// 1-3. Redis behind a loopback proxy that delays, black-holes or resets.
// ---------------------------------------------------------------------------------------------
describe('Redis behind a faulty network (tcp proxy)', () => {
  /** GATE_REDIS_TIMEOUT_MS of this gate. */
  const TIMEOUT = 500;
  /** Allowed lateness of a 503 beyond the timeout (a loaded 2-core machine stalls event loops). */
  const SLACK = 2500;
  let proxy: TcpProxy;
  let up: RecordingUpstream;
  let gw: RunningGate;
  let a: Agent;
  let signer: GateClient;

  beforeAll(async () => {
    const redisPort = Number(new URL(inject('redisUrl')).port);
    proxy = await startTcpProxy({ port: redisPort });
    up = await startUpstream();
    gw = await startGate(
      testEnv(fx, {
        GATE_STORE: 'redis',
        GATE_REDIS_URL: `redis://${proxy.address}`,
        GATE_REDIS_TIMEOUT_MS: String(TIMEOUT),
        // Long enough that no challenge here expires: lateness must not mask the store's answer.
        GATE_CHALLENGE_TTL_MS: '30000',
        GATE_UPSTREAM_URL: up.url,
        GATE_SIGNING_JWK: signingJwk,
        // The in-process gate shares the test's event loop; shedding would only add noise.
        GATE_MAX_EVENT_LOOP_DELAY_MS: '0',
      }),
    );
    a = tlsAgent(fx, fx.agents.p256);
    signer = signerFor(fx.agents.p256);
    await waitFor(async () => (await adminReadyz(gw)) === 200, 10_000, 'gate ready');
  });

  afterEach(() => {
    proxy.mode = 'pass';
  });

  afterAll(async () => {
    await a?.close();
    await signer?.close();
    await gw?.close();
    await proxy?.close();
    await up?.close();
  });

  /** Shared body of the slow and black-hole cases. */
  async function unansweredStore(setFault: () => void): Promise<void> {
    // A proof made while all is well, submitted during the fault.
    const ch = await call(a, `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    expect(ch.status).toBe(201);
    const c = ch.json() as unknown as Challenge;
    const body = { challenge_id: c.challenge_id, proof: await signer.signProof(c) };

    setFault();
    const t0 = Date.now();
    const res = await call(a, `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    const took = Date.now() - t0;
    expectProblem(res, 503, 'store_unavailable');
    expect(res.headers['retry-after']).toBeDefined();
    expect(took).toBeGreaterThanOrEqual(TIMEOUT - 50);
    expect(took).toBeLessThan(TIMEOUT + SLACK);

    // The proof is never accepted while the store does not answer.
    const tok = await postJson(a, `${gw.url}${P}/v1/token`, body);
    expectProblem(tok, 503, 'store_unavailable');
    expect(await adminReadyz(gw)).toBe(503);
    expectProblem(await call(a, `${gw.url}${P}/readyz`), 503, 'store_unavailable');

    proxy.mode = 'pass';
    const took2 = await recovery(a, gw.url, signer, 10_000, 'a whole flow after the store answers again');
    expect(took2).toBeLessThan(10_000);
    expect(await adminReadyz(gw)).toBe(200);

    // The consume sent during the fault reached Redis late (TCP delivers, it does not lose) and
    // used the challenge: one attempt per challenge, whatever the outcome. Never a token.
    const again = await postJson(a, `${gw.url}${P}/v1/token`, body);
    expectProblem(again, 409, 'challenge_replayed');
  }

  it('Redis slow (each chunk delayed 2 × GATE_REDIS_TIMEOUT_MS): 503 store_unavailable in time, no proof accepted, recovery < 10 s', async () => {
    await unansweredStore(() => {
      proxy.delayMs = 2 * TIMEOUT;
      proxy.mode = 'delay';
    });
  });

  it('Redis black-holed (connections accepted, nothing answered): 503 store_unavailable, readyz 503, recovery < 10 s', async () => {
    await unansweredStore(() => {
      proxy.mode = 'drop';
    });
  });

  it('Redis connections reset repeatedly: 503 store_unavailable, no crash, recovery < 10 s', async () => {
    const acceptedBefore = proxy.accepted;
    proxy.mode = 'reset';
    // 2.5 s of refused store: every challenge is 503, promptly (no connection, no wait).
    const until = Date.now() + 2500;
    const seen: Res[] = [];
    while (Date.now() < until) {
      const t0 = Date.now();
      const res = await call(a, `${gw.url}${P}/v1/challenge`, { method: 'POST' });
      seen.push(res);
      expect(Date.now() - t0).toBeLessThan(TIMEOUT + SLACK);
      await sleep(50);
    }
    expect(seen.length).toBeGreaterThan(5);
    expect(new Set(seen.map((r) => `${r.status} ${codeOf(r)}`))).toEqual(new Set(['503 store_unavailable']));
    // The client kept reconnecting (and was reset each time).
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore);

    // Flapping: pass and reset alternate every 300 ms while flows run. Only contract answers.
    const answers = new Set<string>();
    let stop = false;
    const runner = (async () => {
      while (!stop) {
        const f = await flow(a, gw.url, signer);
        answers.add(`challenge ${f.challenge.status} ${f.challenge.status === 201 ? '' : codeOf(f.challenge)}`.trim());
        if (f.token) answers.add(`token ${f.token.status} ${f.token.status === 200 ? '' : codeOf(f.token)}`.trim());
      }
    })();
    for (let i = 0; i < 6; i++) {
      proxy.mode = i % 2 === 0 ? 'pass' : 'reset';
      await sleep(300);
    }
    proxy.mode = 'pass';
    stop = true;
    await runner;
    const allowed = new Set(['challenge 201', 'challenge 503 store_unavailable', 'token 200', 'token 503 store_unavailable']);
    expect([...answers].filter((x) => !allowed.has(x))).toEqual([]);

    // Still alive, and serving again.
    expect((await call(a, `${gw.url}${P}/healthz`)).status).toBe(200);
    expect(await recovery(a, gw.url, signer, 10_000, 'a whole flow after the resets stop')).toBeLessThan(10_000);
    expect(await adminReadyz(gw)).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. Redis killed and restarted while many clients loop the flow.
// ---------------------------------------------------------------------------------------------
it('Redis killed and restarted during a concurrent flow storm: only contract answers, never two tokens for one challenge, recovery < 10 s', async () => {
  const redis = await startRedis();
  const up = await startUpstream();
  const env = testEnv(fx, {
    GATE_STORE: 'redis',
    GATE_REDIS_URL: redis.url,
    GATE_REDIS_TIMEOUT_MS: '500',
    GATE_CHALLENGE_TTL_MS: '30000',
    GATE_UPSTREAM_URL: up.url,
    GATE_SIGNING_JWK: signingJwk,
    GATE_MAX_EVENT_LOOP_DELAY_MS: '0',
    GATE_LOG_LEVEL: 'info',
  });
  const gates = [await startGate(env), await startGate(env)];
  const who = [fx.agents.p256, fx.agents.ed25519, fx.agents.other];
  const agents = who.map((w) => tlsAgent(fx, w));
  const signers = who.map((w) => signerFor(w));
  const WORKERS = 9;
  const COPIES = 3;
  /** Challenge id → number of 200s for its proof. */
  const wins = new Map<string, number>();
  const answers = new Map<string, number>();
  const note = (what: string) => answers.set(what, (answers.get(what) ?? 0) + 1);
  let tokens = 0;
  let tokensAfterRestart = 0;
  let failures = 0;
  let restarted = false;
  let stop = false;
  const worker = async (w: number) => {
    const ag = agents[w % who.length]!;
    const signer = signers[w % who.length]!;
    for (let n = 0; !stop; n++) {
      try {
        const g = gates[(w + n) % 2]!;
        const ch = await call(ag, `${g.url}${P}/v1/challenge`, { method: 'POST' });
        note(`challenge ${ch.status} ${ch.status === 201 ? '' : codeOf(ch)}`.trim());
        if (ch.status !== 201) {
          failures++;
          await sleep(50);
          continue;
        }
        const c = ch.json() as unknown as Challenge;
        const body = JSON.stringify({ challenge_id: c.challenge_id, proof: await signer.signProof(c) });
        // The same proof, COPIES times at once, over both gates.
        const rs = await Promise.all(
          Array.from({ length: COPIES }, (_, k) =>
            call(ag, `${gates[(w + n + k) % 2]!.url}${P}/v1/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }),
          ),
        );
        for (const r of rs) {
          note(`token ${r.status} ${r.status === 200 ? '' : codeOf(r)}`.trim());
          if (r.status === 200) {
            wins.set(c.challenge_id, (wins.get(c.challenge_id) ?? 0) + 1);
            tokens++;
            if (restarted) tokensAfterRestart++;
          } else if (r.status === 503) failures++;
        }
      } catch (err) {
        note(`transport error ${(err as Error).message}`);
      }
    }
  };
  try {
    const storm = Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));
    await waitFor(() => tokens >= 30, 20_000, 'tokens flowing before the kill');
    await redis.stop();
    const failuresAtKill = failures;
    await waitFor(() => failures >= failuresAtKill + 20, 10_000, 'refusals while Redis is down');
    await sleep(500);
    await redis.start();
    restarted = true;
    const t0 = Date.now();
    await waitFor(() => tokensAfterRestart >= 20, 10_000, 'tokens flowing after the restart', 50);
    const recoveredMs = Date.now() - t0;
    stop = true;
    await storm;

    const allowed = new Set([
      'challenge 201',
      'challenge 503 store_unavailable',
      'token 200',
      'token 409 challenge_replayed',
      // A challenge issued before the kill is gone with Redis's memory: unknown, never accepted.
      'token 404 challenge_unknown',
      'token 503 store_unavailable',
    ]);
    expect([...answers.keys()].filter((k) => !allowed.has(k)), JSON.stringify([...answers])).toEqual([]);
    expect([...wins.values()].filter((v) => v !== 1)).toEqual([]);
    expect(answers.get('challenge 503 store_unavailable') ?? 0).toBeGreaterThan(0);
    expect(recoveredMs).toBeLessThan(10_000);
    for (const g of gates) expect(await adminReadyz(g)).toBe(200);
  } finally {
    stop = true;
    await Promise.all(agents.map((x) => x.close()));
    await Promise.all(signers.map((s) => s.close()));
    await Promise.all(gates.map((g) => g.close()));
    await redis.stop();
    await up.close();
  }
});

// ---------------------------------------------------------------------------------------------
// 5. The upstream down, slow, resetting.
// ---------------------------------------------------------------------------------------------
type UpstreamMode = 'ok' | 'slow' | 'reset-after-request' | 'headers-then-close' | 'headers-then-stall' | 'partial-body-then-close';

/** A raw HTTP/1.1 upstream on a fixed port whose behaviour can be switched, or taken down. */
interface FlakyUpstream {
  url: string;
  mode: UpstreamMode;
  slowMs: number;
  requests: number;
  /** Closes the listener and every connection: connections are refused until {@link up}. */
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

async function startFlakyUpstream(): Promise<FlakyUpstream> {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const respond = (s: Socket, status: string, body: string) => {
    if (!s.destroyed) s.write(`HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  };
  const answer = (s: Socket, head: string) => {
    const path = head.split(' ')[1] ?? '';
    const ok = () => respond(s, '200 OK', JSON.stringify({ ok: true, path }));
    switch (state.mode) {
      case 'ok':
        return ok();
      case 'slow':
        return void setTimeout(ok, state.slowMs);
      case 'reset-after-request':
        return s.resetAndDestroy();
      case 'headers-then-close':
        // A status line and headers promising a body, then the connection ends.
        return void s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n', () => s.destroy());
      case 'headers-then-stall':
        // Headers promising a body that never comes (the connection stays open).
        return void s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n');
      case 'partial-body-then-close':
        return void s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"partial":', () => setTimeout(() => s.destroy(), 20));
    }
  };
  const onConnection = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.subarray(0, end).toString('latin1');
        const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        buf = buf.subarray(end + 4 + len);
        state.requests++;
        answer(s, head);
      }
    });
  };
  const listen = async () => {
    server = createServer(onConnection);
    await new Promise<void>((r) => server!.listen(port, '127.0.0.1', r));
    const a = server.address();
    port = typeof a === 'object' && a ? a.port : 0;
  };
  const down = async () => {
    const s = server;
    server = undefined;
    for (const x of sockets) x.destroy();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  const state: FlakyUpstream = {
    url: '',
    mode: 'ok',
    slowMs: 0,
    requests: 0,
    down,
    up: async () => {
      if (!server) await listen();
    },
    close: down,
  };
  await listen();
  state.url = `http://127.0.0.1:${port}`;
  return state;
}

describe('the upstream down, slow or resetting', () => {
  const UPSTREAM_TIMEOUT = 1000;
  let flaky: FlakyUpstream;
  let gw: RunningGate;
  let a: Agent;
  let token: string;

  beforeAll(async () => {
    flaky = await startFlakyUpstream();
    gw = await startGate(
      testEnv(fx, {
        GATE_STORE: 'memory',
        GATE_UPSTREAM_URL: flaky.url,
        GATE_UPSTREAM_TIMEOUT_MS: String(UPSTREAM_TIMEOUT),
        GATE_MAX_EVENT_LOOP_DELAY_MS: '0',
      }),
    );
    a = tlsAgent(fx, fx.agents.p256);
    token = await p256Token(a, gw.url);
  });

  afterEach(async () => {
    flaky.mode = 'ok';
    await flaky.up();
  });

  afterAll(async () => {
    await a?.close();
    await gw?.close();
    await flaky?.close();
  });

  const get = (path: string) => call(a, `${gw.url}${path}`, { headers: { authorization: `Bearer ${token}` } });

  /** The gate still answers its own endpoints, and the upstream again once it is healthy. */
  async function stillServing(): Promise<void> {
    expect((await call(a, `${gw.url}${P}/v1/challenge`, { method: 'POST' })).status).toBe(201);
    flaky.mode = 'ok';
    await flaky.up();
    const t0 = Date.now();
    await waitFor(async () => (await get('/after')).status === 200, 10_000, 'upstream answering through the gate again');
    expect(Date.now() - t0).toBeLessThan(10_000);
  }

  it('upstream down (connection refused): 502 upstream_unavailable, then 200 again', async () => {
    expect((await get('/before')).status).toBe(200);
    await flaky.down();
    const t0 = Date.now();
    expectProblem(await get('/down'), 502, 'upstream_unavailable');
    expect(Date.now() - t0).toBeLessThan(5000);
    await stillServing();
  });

  it('upstream slower than GATE_UPSTREAM_TIMEOUT_MS: 504 upstream_timeout in time, other requests served meanwhile', async () => {
    flaky.mode = 'slow';
    flaky.slowMs = UPSTREAM_TIMEOUT * 3;
    const t0 = Date.now();
    const slow = get('/slow');
    // While that request waits on the upstream, the gate answers others.
    const ch = await call(a, `${gw.url}${P}/v1/challenge`, { method: 'POST' });
    expect(ch.status).toBe(201);
    const res = await slow;
    const took = Date.now() - t0;
    expectProblem(res, 504, 'upstream_timeout');
    expect(took).toBeGreaterThanOrEqual(UPSTREAM_TIMEOUT - 50);
    expect(took).toBeLessThan(UPSTREAM_TIMEOUT * 3);
    await stillServing();
  });

  it('upstream resets the connection after reading the request: 502 upstream_unavailable, no crash', async () => {
    flaky.mode = 'reset-after-request';
    for (let i = 0; i < 5; i++) expectProblem(await get(`/reset/${i}`), 502, 'upstream_unavailable');
    await stillServing();
  });

  it('upstream sends a status line and headers, then closes: 502 upstream_unavailable, no crash', async () => {
    flaky.mode = 'headers-then-close';
    for (let i = 0; i < 3; i++) expectProblem(await get(`/headers/${i}`), 502, 'upstream_unavailable');
    await stillServing();
  });

  it('upstream sends headers, then no body within GATE_UPSTREAM_TIMEOUT_MS: 504 upstream_timeout (nothing was relayed yet), no crash', async () => {
    flaky.mode = 'headers-then-stall';
    const t0 = Date.now();
    expectProblem(await get('/stall'), 504, 'upstream_timeout');
    expect(Date.now() - t0).toBeLessThan(UPSTREAM_TIMEOUT * 3);
    await stillServing();
  });

  it('upstream closes mid-body: the response cannot complete as a 200 (502 or an aborted body), no crash', async () => {
    flaky.mode = 'partial-body-then-close';
    for (let i = 0; i < 3; i++) {
      // Once the upstream's status and first bytes are relayed the status cannot change any
      // more; what the client must never see is a complete 200.
      const outcome = await get(`/partial/${i}`).then(
        (r) => `${r.status} ${codeOf(r)}`,
        (err: unknown) => `aborted: ${(err as Error).message}`,
      );
      expect(outcome).toMatch(/^(502 upstream_unavailable|aborted: .+)$/);
    }
    await stillServing();
  });
});

// ---------------------------------------------------------------------------------------------
// 6. SIGTERM on a real `serve` process.
// ---------------------------------------------------------------------------------------------
/** The error code of a failed undici request (it may sit on the cause). */
function errCode(err: unknown): string {
  const e = err as { code?: string; cause?: { code?: string } };
  return e.code ?? e.cause?.code ?? String(err);
}

describe('SIGTERM on a real serve process', () => {
  let up: RecordingUpstream;

  beforeAll(async () => {
    up = await startUpstream();
  });
  afterEach(() => {
    up.delayMs = 0;
  });
  afterAll(async () => {
    await up?.close();
  });

  function serveEnv(drainMs: number): Record<string, string> {
    return testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_DRAIN_TIMEOUT_MS: String(drainMs), GATE_LOG_LEVEL: 'warn', GATE_SIGNING_JWK: signingJwk });
  }

  // The single process's SIGTERM drain (test/cluster/workers.test.ts has the cluster's).
  it('during traffic: readyz 503, in-flight slow requests finish 200, new connections refused, exit 0 within the drain timeout', async () => {
    const DRAIN = 8000;
    const gate = await spawnServe(serveEnv(DRAIN));
    const a = tlsAgent(fx, fx.agents.p256);
    const b = tlsAgent(fx, fx.agents.ed25519);
    try {
      const token = await p256Token(a, gate.url);

      // Background traffic on b's kept-alive connection: challenges, in a loop.
      expect((await call(b, `${gate.url}${P}/v1/challenge`, { method: 'POST' })).status).toBe(201);
      const traffic = new Map<string, number>();
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          const what = await call(b, `${gate.url}${P}/v1/challenge`, { method: 'POST' }).then(
            (r) => `${r.status}${r.status === 201 ? '' : ' ' + codeOf(r)}`,
            (err: unknown) => `error ${errCode(err)}`,
          );
          traffic.set(what, (traffic.get(what) ?? 0) + 1);
          await sleep(20);
        }
      })();

      up.delayMs = 2500;
      const seenBefore = up.seen.length;
      const inflight = Array.from({ length: 3 }, (_, i) => call(a, `${gate.url}/slow/${i}`, { headers: { authorization: `Bearer ${token}` } }));
      await waitFor(() => up.seen.length >= seenBefore + 3, 10_000, 'slow requests reached the upstream');

      const t0 = Date.now();
      gate.child.kill('SIGTERM');
      await waitFor(async () => (await adminReadyz(gate)) === 503, 3000, 'admin readyz 503 while draining');
      // New connections are refused: the listener closes as the drain starts (the load
      // balancer moves on). Each probe uses a fresh dispatcher, so a fresh connection.
      let lastProbe = '';
      await waitFor(async () => {
        const fresh = tlsAgent(fx, fx.agents.p256);
        lastProbe = await call(fresh, `${gate.url}${P}/healthz`).then(
          (r) => `answered ${r.status}`,
          (err: unknown) => errCode(err),
        );
        await fresh.close();
        return lastProbe === 'ECONNREFUSED';
      }, 2000, 'new connections refused').catch((err: unknown) => {
        throw new Error(`${(err as Error).message}; last probe: ${lastProbe}`);
      });

      const results = await Promise.all(inflight);
      expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
      expect(results.map((r) => r.json().url)).toEqual(['/slow/0', '/slow/1', '/slow/2']);

      const { code, signal, at } = await gate.exited;
      stop = true;
      await loop;
      expect({ code, signal }, gate.output()).toEqual({ code: 0, signal: null });
      expect(at - t0).toBeLessThan(DRAIN);
      // Traffic saw service, then the drain refusal or a closed/refused connection: nothing else.
      const allowed = /^(201|503 overloaded|error (ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET|UND_ERR_CLOSED))$/;
      expect([...traffic.keys()].filter((k) => !allowed.test(k)), JSON.stringify([...traffic])).toEqual([]);
      expect(traffic.get('201') ?? 0).toBeGreaterThan(0);
    } finally {
      if (gate.child.exitCode === null) gate.child.kill('SIGKILL');
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('an in-flight request outlasting GATE_DRAIN_TIMEOUT_MS is cut, and the process still exits 0 in time', async () => {
    const DRAIN = 1500;
    /** Exit bound after SIGTERM: the drain timeout plus closing store, pool and listeners. */
    const SLACK = 3500;
    const gate = await spawnServe(serveEnv(DRAIN));
    const a = tlsAgent(fx, fx.agents.p256);
    try {
      const token = await p256Token(a, gate.url);

      up.delayMs = 20_000;
      const seenBefore = up.seen.length;
      const t0Req = Date.now();
      const long = call(a, `${gate.url}/very-slow`, { headers: { authorization: `Bearer ${token}` } }).then(
        (r) => ({ status: r.status, at: Date.now() }),
        (err: unknown) => ({ error: errCode(err), at: Date.now() }),
      );
      await waitFor(() => up.seen.length > seenBefore, 10_000, 'the long request reached the upstream');

      const t0 = Date.now();
      gate.child.kill('SIGTERM');
      const { code, signal, at } = await gate.exited;
      expect({ code, signal }, gate.output()).toEqual({ code: 0, signal: null });
      expect(at - t0).toBeGreaterThanOrEqual(DRAIN - 100);
      expect(at - t0).toBeLessThan(DRAIN + SLACK);
      // The request was cut, not answered by the upstream (which would have taken 20 s).
      const outcome = await long;
      expect('error' in outcome ? 'cut' : `answered ${outcome.status}`).toBe('cut');
      expect(outcome.at - t0Req).toBeLessThan(20_000);
    } finally {
      if (gate.child.exitCode === null) gate.child.kill('SIGKILL');
      await a.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 7. Clock skew between gate instances.
// ---------------------------------------------------------------------------------------------
/**
 * What the contract implies, and what the gate does: `expires_at` is written by the issuing
 * gate from its clock; the deadline is checked by the consuming gate against its own clock
 * (`receivedAt`). Proof `iat` and token `iat`/`exp` are checked against the verifying gate's
 * clock with GATE_MAX_SKEW_S tolerance. The agent signs proofs with its own (true) clock.
 */
describe('clock skew between gate instances sharing Redis (GATE_MAX_SKEW_S=30)', () => {
  const gates: Record<'a' | 'b' | 'c' | 'd', RunningGate | undefined> = { a: undefined, b: undefined, c: undefined, d: undefined };
  let up: RecordingUpstream;
  let ag: Agent;
  let signer: GateClient;
  const G = (k: keyof typeof gates) => gates[k]!;

  beforeAll(async () => {
    up = await startUpstream();
    const env = testEnv(fx, {
      GATE_STORE: 'redis',
      GATE_REDIS_URL: inject('redisUrl'),
      GATE_UPSTREAM_URL: up.url,
      GATE_SIGNING_JWK: signingJwk,
      GATE_MAX_SKEW_S: '30',
      // The default TTL, on purpose: it is what deployments run with.
      GATE_CHALLENGE_TTL_MS: '3000',
      GATE_TOKEN_TTL_S: '300',
      GATE_MAX_EVENT_LOOP_DELAY_MS: '0',
    });
    const at = (offsetMs: number) => () => Date.now() + offsetMs;
    // a: true time; b: +20 s (within the window); c: +40 s (beyond it); d: +400 s (past token exp + skew).
    [gates.a, gates.b, gates.c, gates.d] = await Promise.all([
      startGate(env, { now: at(0) }),
      startGate(env, { now: at(20_000) }),
      startGate(env, { now: at(40_000) }),
      startGate(env, { now: at(400_000) }),
    ]);
    ag = tlsAgent(fx, fx.agents.p256);
    signer = signerFor(fx.agents.p256);
  });

  afterAll(async () => {
    await ag?.close();
    await signer?.close();
    await Promise.all(Object.values(gates).map((g) => g?.close()));
    await up?.close();
  });

  async function tokenFrom(issuer: RunningGate, consumer = issuer): Promise<Res> {
    const f = await flow(ag, issuer.url, signer, consumer.url);
    expect(f.challenge.status).toBe(201);
    return f.token!;
  }
  const use = (g: RunningGate, token: string) => call(ag, `${g.url}/skew`, { headers: { authorization: `Bearer ${token}` } });

  it('within the window (+20 s): proofs accepted on both, tokens cross-verify, a challenge lives on the gate that is behind', async () => {
    const onA = await tokenFrom(G('a'));
    const onB = await tokenFrom(G('b'));
    // The proof's iat (agent's true clock) is 20 s behind b's clock: within 30 s, accepted.
    expect(onA.status).toBe(200);
    expect(onB.status).toBe(200);
    const tA = onA.json().access_token as string;
    const tB = onB.json().access_token as string;
    // b's token has iat 20 s in a's future: within skew. a's token is simply older for b.
    expect((await use(G('b'), tA)).status).toBe(200);
    expect((await use(G('a'), tB)).status).toBe(200);
    // Challenge from b (expires_at = b's clock + 3 s), consumed on a (20 s behind): on time.
    expect((await tokenFrom(G('b'), G('a'))).status).toBe(200);
  });

  it('within the window but skew > challenge TTL: a challenge issued by the gate behind and consumed by the gate ahead is 408', async () => {
    // expires_at = a's clock + 3 s; b receives the proof at a's clock + 20 s: late by b's clock.
    expectProblem(await tokenFrom(G('a'), G('b')), 408, 'challenge_expired');
  });

  it('beyond the window (+40 s): proof iat refused (proof_invalid), a token from the future refused (token_invalid)', async () => {
    // c's own challenge is on time by c's clock, but the agent's iat is 40 s behind it.
    expectProblem(await tokenFrom(G('c')), 403, 'proof_invalid');
    // A challenge from c consumed on a (40 s behind) is on time there, and the proof matches
    // a's clock: accepted. A gate ahead of the others stretches its challenges' lifetime.
    expect((await tokenFrom(G('c'), G('a'))).status).toBe(200);
    // For c to sign a token at all, the agent's clock must agree with c's (iat +40 s).
    const ch = await call(ag, `${G('c').url}${P}/v1/challenge`, { method: 'POST' });
    const c = ch.json() as unknown as Challenge;
    const proof = await signer.signProof(c, { payload: { iat: Math.floor((Date.now() + 40_000) / 1000) } });
    const issuedByC = await postJson(ag, `${G('c').url}${P}/v1/token`, { challenge_id: c.challenge_id, proof });
    expect(issuedByC.status).toBe(200);
    const tC = issuedByC.json().access_token as string;
    // On a, c's token has iat 40 s in the future: beyond skew, token_invalid (401).
    const onA = await use(G('a'), tC);
    expectProblem(onA, 401, 'token_invalid');
    expect(onA.headers['www-authenticate']).toContain('error="invalid_token"');
    // a's token on c is 40 s old, far from its exp: accepted (a clock ahead only ages tokens).
    const tA = (await tokenFrom(G('a'))).json().access_token as string;
    expect((await use(G('c'), tA)).status).toBe(200);
    // On d (+400 s), a's 300 s token is past exp + skew: token_expired (401).
    const onD = await use(G('d'), tA);
    expectProblem(onD, 401, 'token_expired');
    expect(onD.headers['www-authenticate']).toContain('error="invalid_token"');
  });
});
