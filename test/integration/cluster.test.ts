/**
 * Redis Cluster (GATE_REDIS_CLUSTER_NODES): the full flow with shared rate limits, the replay
 * race of section 4 step 8 across two gates, and a master killed mid-run (its replica is
 * promoted): 503 `store_unavailable` meanwhile, never two tokens for one challenge, and the
 * gates serve again by themselves.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Cluster } from 'ioredis';
import { Agent } from 'undici';
import { GateClient, type Challenge } from '../../src/client/index.js';
import { generateSigningJwk } from '../../src/tokens/index.js';
import { RedisStore, type WindowOp } from '../../src/store/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call, type Res } from '../helpers/http.js';
import { waitFor } from '../helpers/ports.js';
import { redisCommand, startRedisCluster, type RedisCluster } from '../helpers/redis-cluster.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

const P = '/.agent-gate';
let fx: Fixtures;
let up: RecordingUpstream;
let cluster: RedisCluster;
let gates: RunningGate[] = [];
const clients: GateClient[] = [];
const dispatchers: Agent[] = [];

beforeAll(async () => {
  [fx, up, cluster] = await Promise.all([makeFixtures(), startUpstream(), startRedisCluster()]);
  const env = testEnv(fx, {
    GATE_STORE: 'redis',
    GATE_REDIS_CLUSTER_NODES: cluster.nodes.join(','),
    GATE_REDIS_TIMEOUT_MS: '500',
    GATE_UPSTREAM_URL: up.url,
    // One signing key for both gates, so a token from one is good at the other.
    GATE_SIGNING_JWK: JSON.stringify(await generateSigningJwk()),
    // Limits on, so the step script runs on the cluster (one call per hash tag), but far from tripping.
    GATE_RATE_LIMITS: 'on',
    GATE_RATE_CHALLENGE_IP: '100000/60',
    GATE_RATE_CHALLENGE_IDENTITY: '100000/60',
    GATE_RATE_TOKEN_IDENTITY: '100000/60',
    GATE_RATE_PROXY_IDENTITY: '100000/1',
    GATE_RATE_FAILED_PROOFS: '100000/60',
    // The race submits 500 proofs at once on two cores: leave room before challenges expire.
    // (and the failover test re-submits its proofs after recovery, up to ~30 s later).
    GATE_CHALLENGE_TTL_MS: '60000',
  });
  gates = [await startGate(env), await startGate(env)];
  await Promise.all(
    gates.map((g) => waitFor(async () => (await fetch(`${g.adminUrl}/readyz`)).status === 200, 10_000, 'gate ready on the cluster')),
  );
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(dispatchers.map((d) => d.close()));
  await Promise.all(gates.map((g) => g.close()));
  await cluster?.stop();
  await up?.close();
  if (fx) rmSync(fx.dir, { recursive: true, force: true });
});

function client(gate: RunningGate, who = fx.agents.p256): GateClient {
  const c = new GateClient({ baseUrl: gate.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost', maxRetryAfterS: 0 });
  clients.push(c);
  return c;
}

function dispatcher(who = fx.agents.p256): Agent {
  const d = new Agent({ connections: 16, connect: { ca: fx.ca.certPem, cert: who.certPem, key: who.keyPem, servername: 'localhost' } });
  dispatchers.push(d);
  return d;
}

async function metric(g: RunningGate, re: RegExp): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  return Number(re.exec(text)?.[1] ?? 0);
}
const REPLAYS = /^agent_gate_replays_detected_total\{kind="challenge"\} (\d+)/m;
const replaysTotal = async () => (await Promise.all(gates.map((g) => metric(g, REPLAYS)))).reduce((a, b) => a + b, 0);

function submit(d: Agent, g: RunningGate, body: string): Promise<Res> {
  return call(d, `${g.url}${P}/v1/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
}

/** A fresh 22-character challenge id whose `ag:{id}:ch` key lives on the master at `port`. */
async function challengeIdOn(port: number): Promise<string> {
  const me = (await redisCommand(port, ['CLUSTER', 'NODES'])).split('\n').find((l) => l.includes('myself'));
  const ranges = (me ?? '').trim().split(' ').slice(8).filter((r) => /^\d+(-\d+)?$/.test(r)).map((r) => r.split('-').map(Number));
  for (let i = 0; i < 1000; i++) {
    const id = randomBytes(16).toString('base64url');
    const slot = Number((await redisCommand(port, ['CLUSTER', 'KEYSLOT', `ag:{${id}}:ch`])).slice(1));
    if (ranges.some(([a, b]) => slot >= a! && slot <= (b ?? a!))) return id;
  }
  throw new Error(`no challenge id found for the slots of ${port}`);
}

it('full flow on the cluster across two gates, with the rate limits kept in the cluster', async () => {
  const [g0, g1] = gates as [RunningGate, RunningGate];
  const c0 = client(g0);
  const c1 = client(g1, fx.agents.ed25519);

  // SDK flow and a gated request through each gate.
  const r0 = await c0.request('/hello?x=1');
  expect(r0.status).toBe(200);
  expect(r0.json()).toMatchObject({ url: '/hello?x=1', agent_id: expect.any(String) });
  const r1 = await c1.request('/there', { method: 'POST', body: 'abc' });
  expect(r1.status).toBe(200);
  expect(r1.json()).toMatchObject({ method: 'POST', url: '/there', body_bytes: 3 });
  expect(up.seen.at(-1)?.headers['x-agent-thumbprint']).toBe(c1.thumbprint);

  // Challenge on one gate, token on the other, replay on the first, unknown id on the second.
  const c0on1 = client(g1);
  const ch = await c0.challenge();
  const body = { challenge_id: ch.challenge_id, proof: await c0.signProof(ch) };
  const tok = await c0on1.submitProof(body);
  expect(tok.status).toBe(200);
  const token = (tok.json() as { access_token: string }).access_token;
  const replay = await c0.submitProof(body);
  expect(replay.status).toBe(409);
  expect((replay.json() as { code: string }).code).toBe('challenge_replayed');
  const unknown = await c0on1.submitProof({ ...body, challenge_id: 'A'.repeat(22) });
  expect(unknown.status).toBe(404);
  expect((unknown.json() as { code: string }).code).toBe('challenge_unknown');
  const gated = await call(dispatcher(), `${g0.url}/with-token`, { headers: { authorization: `Bearer ${token}` } });
  expect(gated.status, gated.text).toBe(200);

  // The limits counted on the cluster, one counter shared by both gates:
  // p256 asked for 2 challenges (both on g0) and sent 4 token requests (g0 and g1).
  const redis = new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: Number(n.split(':')[1]) })), { enableOfflineQueue: true });
  redis.on('error', () => {});
  try {
    expect(await redis.get(`ag:rl:{${c0.thumbprint}}:cid`)).toBe('2');
    expect(await redis.get(`ag:rl:{${c0.thumbprint}}:tid`)).toBe('4');
    expect(await redis.get(`ag:rl:{${c1.thumbprint}}:tid`)).toBe('1');
    // The consumed challenge left its tombstone in the same slot ({challenge_id} hash tag).
    expect(await redis.exists(`ag:{${ch.challenge_id}}:ch`)).toBe(0);
    expect(await redis.exists(`ag:{${ch.challenge_id}}:used`)).toBe(1);
  } finally {
    redis.disconnect();
  }
});

it('a limit step on the cluster: one call per hash tag, in order; a refusal in either part ends the step', async () => {
  const store = new RedisStore({ clusterNodes: cluster.nodes, timeoutMs: 2000 });
  try {
    await waitFor(async () => (await store.ping().then(() => true, () => false)), 10_000, 'cluster store ready');
    const [tp, addr] = [randomBytes(8).toString('hex'), `10.9.${randomBytes(1)[0]}.1`];
    const ops = (idPoints: number, ipPoints: number): WindowOp[] => [
      { kind: 'check', key: `ag:rl:{${tp}}:fp`, points: 3, windowMs: 60_000 },
      { kind: 'count', key: `ag:rl:{${tp}}:cid`, points: idPoints, windowMs: 60_000 },
      { kind: 'count', key: `ag:rl:{${addr}}:cip`, points: ipPoints, windowMs: 60_000 },
    ];
    expect(await store.countStep(ops(1, 5))).toEqual({ refused: -1, msLeft: 0, counts: [0, 1, 1] });
    // The identity refuses in the first call: the address (another slot) is not spent.
    const id = await store.countStep(ops(1, 5));
    expect(id).toMatchObject({ refused: 1, counts: [0, 2] });
    expect(id.msLeft).toBeGreaterThan(55_000);
    // The address refuses in the second call: its index counts from the whole step.
    const ip = await store.countStep(ops(10, 1));
    expect(ip).toMatchObject({ refused: 2, counts: [0, 3, 2] });
    const redis = store.redis!;
    expect(await redis.get(`ag:rl:{${addr}}:cip`)).toBe('2');
    expect(await redis.get(`ag:rl:{${tp}}:cid`)).toBe('3');
  } finally {
    await store.close();
  }
});

it('replay race on the cluster: 50 proofs x 10 concurrent submissions over two gates, exactly 50 tokens', async () => {
  const N = 50;
  const K = 10;
  const c = client(gates[0]!);
  const ds = gates.map(() => dispatcher());
  const before = await replaysTotal();
  const chs = await Promise.all(Array.from({ length: N }, (_, i) => (i % 2 === 0 ? c : client(gates[1]!)).challenge()));
  const bodies = await Promise.all(chs.map(async (ch) => JSON.stringify({ challenge_id: ch.challenge_id, proof: await c.signProof(ch) })));
  // The K submissions of one proof go out back to back, alternating gates.
  const results = await Promise.all(
    bodies.flatMap((body, j) => Array.from({ length: K }, (_, k) => submit(ds[k % 2]!, gates[k % 2]!, body).then((r) => ({ j, r })))),
  );
  for (let j = 0; j < N; j++) {
    const mine = results.filter((x) => x.j === j).map((x) => x.r);
    expect(mine.filter((r) => r.status === 200), `challenge ${j}`).toHaveLength(1);
    expect(mine.filter((r) => r.status === 409 && r.json().code === 'challenge_replayed'), `challenge ${j}`).toHaveLength(K - 1);
  }
  const tokens = new Set(results.filter((x) => x.r.status === 200).map((x) => x.r.json().access_token));
  expect(tokens.size).toBe(N);
  expect((await replaysTotal()) - before).toBe(N * (K - 1));
});

it('a master killed mid-run: 503 store_unavailable meanwhile, never two tokens per challenge, then served again', async () => {
  const WORKERS = 8;
  const started = Date.now();
  const deadline = started + 30_000;
  const ds = gates.map(() => dispatcher());
  const signer = client(gates[0]!);

  interface Flow {
    t: number;
    challenge?: number;
    body?: string;
    submits: number[];
    codes: string[];
    gated?: number;
    ok: boolean;
  }
  const flows: Flow[] = [];
  const statuses = new Map<number, number>();
  const count = (s: number) => statuses.set(s, (statuses.get(s) ?? 0) + 1);
  /** How long each 503 took to come back (ms), and whether it said when to retry. */
  const ms503: number[] = [];
  let without503RetryAfter = 0;
  const timed = async (p: () => Promise<Res>): Promise<Res> => {
    const t0 = Date.now();
    const r = await p();
    if (r.status === 503) {
      ms503.push(Date.now() - t0);
      if (r.headers['retry-after'] === undefined) without503RetryAfter++;
    }
    return r;
  };
  const codeOf = (r: Res): string => {
    try {
      return String(r.json().code ?? '');
    } catch {
      return '';
    }
  };
  let stop = false;
  let n = 0;

  const worker = async (w: number) => {
    while (!stop && Date.now() < deadline) {
      const i = n++;
      const a = (i + w) % 2;
      const f: Flow = { t: Date.now(), submits: [], codes: [], ok: false };
      flows.push(f);
      const cr = await timed(() => call(ds[a]!, `${gates[a]!.url}${P}/v1/challenge`, { method: 'POST' }));
      f.challenge = cr.status;
      count(cr.status);
      if (cr.status !== 201) {
        f.codes.push(codeOf(cr));
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const ch = cr.json() as unknown as Challenge;
      const body = JSON.stringify({ challenge_id: ch.challenge_id, proof: await signer.signProof(ch) });
      f.body = body;
      // Every proof twice at once, one per gate.
      const rs = await Promise.all([timed(() => submit(ds[0]!, gates[0]!, body)), timed(() => submit(ds[1]!, gates[1]!, body))]);
      for (const r of rs) {
        f.submits.push(r.status);
        count(r.status);
        if (r.status !== 200) f.codes.push(codeOf(r));
      }
      const win = rs.find((r) => r.status === 200);
      if (win) {
        const g = await call(ds[a]!, `${gates[a]!.url}/flow/${i}`, { headers: { authorization: `Bearer ${String(win.json().access_token)}` } });
        f.gated = g.status;
        count(g.status);
        f.ok = g.status === 200;
      } else {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const running = Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));

  let killedAt = 0;
  let promotedAt = 0;
  let recoveredAt = 0;
  try {
    await waitFor(() => flows.filter((f) => f.ok).length >= 10, 15_000, '10 flows before the kill', 50);
    const masters = await cluster.masters();
    expect(masters).toHaveLength(3);
    const victim = masters[0]!;
    // A probe whose consume goes to the victim's slots: refused while they have no master.
    const probe = JSON.stringify({ challenge_id: await challengeIdOn(victim), proof: 'a.b.c' });
    killedAt = Date.now();
    await cluster.kill(victim);
    // Until the gates' connections notice the dead master, a probe can still be answered (404,
    // the id is unknown); poll until the outage shows as 503, bounded by the failover itself.
    let during = await timed(() => submit(ds[0]!, gates[0]!, probe));
    const pollUntil = Date.now() + 10_000;
    while (during.status !== 503 && Date.now() < pollUntil) {
      await new Promise((r) => setTimeout(r, 50));
      during = await timed(() => submit(ds[0]!, gates[0]!, probe));
    }
    expect(during.status).toBe(503);
    expect(during.json().code).toBe('store_unavailable');
    await waitFor(async () => {
      const m = await cluster.masters();
      return m.length === 3 && !m.includes(victim);
    }, 15_000, 'replica promoted', 100);
    promotedAt = Date.now();
    // Those slots answer again through the promoted replica: the probe is now simply unknown.
    await waitFor(async () => (await submit(ds[1]!, gates[1]!, probe)).status === 404, Math.max(1000, killedAt + 20_000 - Date.now()), 'the victim slots served again', 100);
    // Served again without restarting the gates: 5 complete flows that started after the promotion.
    await waitFor(() => flows.filter((f) => f.ok && f.t >= promotedAt).length >= 5, Math.max(1000, killedAt + 20_000 - Date.now()), 'flows succeeding after the failover', 50);
    recoveredAt = Math.min(...flows.filter((f) => f.ok && f.t >= promotedAt).map((f) => f.t));
  } finally {
    stop = true;
    await running;
  }

  // Only codes of the contract table for these endpoints.
  expect([...statuses.keys()].filter((s) => ![200, 201, 409, 503].includes(s))).toEqual([]);
  const codes = new Set(flows.flatMap((f) => f.codes));
  expect([...codes].filter((c) => c !== 'challenge_replayed' && c !== 'store_unavailable')).toEqual([]);
  // The failover was visible as 503 store_unavailable (the probe at least), with Retry-After.
  expect(ms503.length).toBeGreaterThan(0);
  expect(without503RetryAfter).toBe(0);
  // Bounded: each store call gives up after GATE_REDIS_TIMEOUT_MS (500), and a request makes
  // at most four of them (cooldown, two rate limits, the challenge itself).
  expect(Math.max(...ms503)).toBeLessThan(5000);
  // Never two tokens for one challenge.
  for (const f of flows) expect(f.submits.filter((s) => s === 200).length).toBeLessThanOrEqual(1);
  // Before the kill, every flow was clean: one token, one replay.
  for (const f of flows.filter((x) => x.t < killedAt - 1000 && x.submits.length === 2)) {
    expect([...f.submits].sort()).toEqual([200, 409]);
    expect(f.gated).toBe(200);
  }
  expect(recoveredAt - killedAt).toBeLessThan(20_000);

  // Every proof of the run, submitted twice more now that the cluster is whole again: a
  // challenge that already won stays spent (its tombstone survived the failover), one whose
  // consume never reached the store may win once, and none ever yields a second token.
  const again = await Promise.all(
    flows.filter((f) => f.body).map(async (f) => ({ f, rs: await Promise.all(gates.map((g, k) => submit(ds[k]!, g, f.body!))) })),
  );
  for (const { f, rs } of again) {
    expect(rs.map((r) => r.status).filter((st) => st !== 200 && st !== 409)).toEqual([]);
    const won = f.submits.filter((st) => st === 200).length + rs.filter((r) => r.status === 200).length;
    expect(won).toBeLessThanOrEqual(1);
    if (f.submits.includes(200)) expect(rs.map((r) => r.status)).toEqual([409, 409]);
  }

  // And the SDK flow works on both gates, after the failover, with no restart.
  for (const g of gates) {
    const res = await client(g).request('/after-failover');
    expect(res.status).toBe(200);
  }
  const summary = { flows: flows.length, ok: flows.filter((f) => f.ok).length, statuses: Object.fromEntries(statuses), promotedAfterMs: promotedAt - killedAt, ms503, recoveredAfterMs: recoveredAt - killedAt, wonOnResubmit: again.filter(({ rs }) => rs.some((r) => r.status === 200)).length };
  console.log(`cluster failover: ${JSON.stringify(summary)}`);
});
