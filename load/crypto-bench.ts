/**
 * `npx tsx load/crypto-bench.ts`: the cryptographic hot path, jose (WebCrypto, the former
 * path, test/tokens/jose-reference.ts) against node:crypto (the current path), in one process.
 *
 * Per operation: proof verification for every allowed key type (Ed25519, P-256, P-384, RSA
 * 2048/3072/4096 PS256), access-token signing and uncached verification. Each round runs
 * both paths back to back on the same inputs (order alternating per round); reported are the
 * medians over rounds, per op, of process CPU µs (user + system of every thread, so work on
 * the thread pool counts), event-loop-busy µs (what other requests wait for) and wall µs
 * (operations one after another, awaited). The node:crypto proof path is `verifyProof` as the
 * gate calls it (P-384 on the thread pool, the rest inline). About 40 s. Flags: `--rounds=N` (default 7), `--ms=N` per path per round (default 250).
 * @module
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { CompactSign } from 'jose';
import type { AgentIdentity } from '../src/identity/index.js';
import { verifyProof } from '../src/challenge/proof.js';
import type { ProofAlg } from '../src/lib/proof-alg.js';
import { loadSigningKeys, TokenService } from '../src/tokens/index.js';
import { joseIssue, joseVerifyProof, joseVerifyToken } from '../test/tokens/jose-reference.js';

const arg = (name: string, dflt: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt);
const ROUNDS = arg('rounds', 7);
const MS = arg('ms', 250);

type Op = () => unknown;
interface Case {
  name: string;
  old: Op;
  new: Op;
}

interface Sample {
  wall: number;
  cpu: number;
  loop: number;
}

/** Runs `op` for about `ms`, returning wall, CPU and event-loop-busy µs per op. */
async function measure(op: Op, ms: number): Promise<Sample> {
  for (let i = 0; i < 20; i++) await op();
  let n = 0;
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(ms) * 1_000_000n;
  let now = t0;
  while (now < end) {
    for (let i = 0; i < 16; i++) await op();
    n += 16;
    now = process.hrtime.bigint();
  }
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  return { wall: Number(now - t0) / 1e3 / n, cpu: (cpu.user + cpu.system) / n, loop: (elu.active * 1e3) / n };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  const nowMs = Date.now();
  const want = { cid: 'A'.repeat(22), nonce: 'B'.repeat(43), aud: 'agent-gate', skewS: 30, nowMs };
  const payload = Buffer.from(JSON.stringify({ cid: want.cid, nonce: want.nonce, aud: want.aud, iat: Math.floor(nowMs / 1000) }));
  const kinds: [string, ProofAlg, KeyObject, KeyObject][] = [];
  const add = (name: string, alg: ProofAlg, pair: { publicKey: KeyObject; privateKey: KeyObject }) => kinds.push([name, alg, pair.publicKey, pair.privateKey]);
  add('Ed25519', 'EdDSA', generateKeyPairSync('ed25519'));
  add('P-256', 'ES256', generateKeyPairSync('ec', { namedCurve: 'prime256v1' }));
  add('P-384', 'ES384', generateKeyPairSync('ec', { namedCurve: 'secp384r1' }));
  for (const bits of [2048, 3072, 4096]) add(`RSA-${bits}`, 'PS256', generateKeyPairSync('rsa', { modulusLength: bits }));

  const cases: Case[] = [];
  for (const [name, alg, publicKey, privateKey] of kinds) {
    const proof = await new CompactSign(payload).setProtectedHeader({ alg, typ: 'agent-gate-proof+jwt' }).sign(privateKey);
    const agent = { publicKey, alg } as AgentIdentity;
    cases.push({ name: `proof verify ${alg} ${name}`, old: () => joseVerifyProof(proof, agent, want), new: () => verifyProof(proof, agent, want) });
  }

  const keys = await loadSigningKeys({ allowEphemeral: true });
  const o = { issuer: 'https://gate.bench', audience: 'agent-gate', ttlS: 300, skewS: 30 };
  const svc = new TokenService({ keys, ...o });
  const signer = { kid: keys.keys[0]!.kid, privateKey: keys.keys[0]!.privateKey! };
  const byKid = new Map(keys.keys.map((k) => [k.kid, k]));
  const tp = 'x'.repeat(43);
  const iat = Math.floor(nowMs / 1000);
  cases.push({ name: 'token sign EdDSA', old: () => joseIssue(o, signer, 'urn:agent:bench', tp, iat, 'j'.repeat(22)), new: () => svc.issueSync('urn:agent:bench', tp) });
  const token = svc.issueSync('urn:agent:bench', tp).token;
  // The uncached path: the cache would answer every call after the first.
  const verifyUncached = (svc as unknown as { verifyUncached(t: string, nowS: number): unknown }).verifyUncached.bind(svc);
  cases.push({ name: 'token verify EdDSA (uncached)', old: () => joseVerifyToken(o, byKid, token, Date.now() / 1000), new: () => verifyUncached(token, Date.now() / 1000) });

  const empty = () => ({ wall: [] as number[], cpu: [] as number[], loop: [] as number[] });
  const res = new Map<string, { old: ReturnType<typeof empty>; new: ReturnType<typeof empty> }>();
  for (const c of cases) res.set(c.name, { old: empty(), new: empty() });
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of cases) {
      const order = r % 2 === 0 ? (['old', 'new'] as const) : (['new', 'old'] as const);
      for (const which of order) {
        const m = await measure(c[which], MS);
        const into = res.get(c.name)![which];
        into.wall.push(m.wall);
        into.cpu.push(m.cpu);
        into.loop.push(m.loop);
      }
    }
    process.stderr.write(`round ${r + 1}/${ROUNDS}\n`);
  }

  const f = (x: number) => x.toFixed(1);
  // CPU µs per op hold up on a busy machine; wall µs do not (they include waiting for a core).
  console.log(`node ${process.version}, ${cpus()[0]?.model ?? 'cpu'} x${availableParallelism()}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}, ${ROUNDS} interleaved rounds of ${MS} ms per path`);
  console.log('| operation | CPU µs jose | CPU µs node:crypto | CPU saved | event loop µs jose | event loop µs node:crypto | wall µs jose | wall µs node:crypto |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const c of cases) {
    const r = res.get(c.name)!;
    const [oc, nc] = [median(r.old.cpu), median(r.new.cpu)];
    console.log(`| ${c.name} | ${f(oc)} | ${f(nc)} | ${f(oc - nc)} (${f((1 - nc / oc) * 100)} %) | ${f(median(r.old.loop))} | ${f(median(r.new.loop))} | ${f(median(r.old.wall))} | ${f(median(r.new.wall))} |`);
  }
}

await main();
