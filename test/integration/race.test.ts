/**
 * Step 8 of section 4: of N concurrent submissions of one proof, across gate instances
 * sharing one Redis, exactly one wins.
 */
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { Agent } from 'undici';
import { GateClient } from '../../src/client/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { call } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let fx: Fixtures;
let up: RecordingUpstream;
let gates: RunningGate[] = [];

beforeAll(async () => {
  fx = await makeFixtures();
  up = await startUpstream();
  const env = testEnv(fx, { GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl'), GATE_UPSTREAM_URL: up.url });
  gates = [await startGate(env), await startGate(env)];
});

afterAll(async () => {
  await Promise.all(gates.map((g) => g.close()));
  await up?.close();
});

it('200 concurrent submissions of one valid proof against two gates: exactly one token', async () => {
  const who = fx.agents.p256;
  const c = new GateClient({ baseUrl: gates[0]!.url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  const dispatchers = gates.map(() => new Agent({ connections: 20, connect: { ca: fx.ca.certPem, cert: who.certPem, key: who.keyPem, servername: 'localhost' } }));
  try {
    for (let round = 0; round < 3; round++) {
      const ch = await c.challenge();
      const body = JSON.stringify({ challenge_id: ch.challenge_id, proof: await c.signProof(ch) });
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          call(dispatchers[i % 2]!, `${gates[i % 2]!.url}/.agent-gate/v1/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }),
        ),
      );
      const statuses = results.map((r) => r.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(1);
      expect(statuses.filter((s) => s === 409)).toHaveLength(199);
      expect(new Set(results.filter((r) => r.status === 409).map((r) => r.json().code))).toEqual(new Set(['challenge_replayed']));
    }
    // Both gates counted their share of the replays, and together exactly the losers.
    const replays = await Promise.all(gates.map(async (g) => {
      const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
      return Number(/^agent_gate_replays_detected_total\{kind="challenge"\} (\d+)/m.exec(text)?.[1]);
    }));
    expect(replays[0]! + replays[1]!).toBe(3 * 199);
  } finally {
    await c.close();
    await Promise.all(dispatchers.map((d) => d.close()));
  }
});
