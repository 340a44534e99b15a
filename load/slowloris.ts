/**
 * `npx tsx load/slowloris.ts`: the slowloris figure of load/RESULTS.md (issue 13, class 3), on
 * loopback only, bounded to about a minute.
 *
 * A gate child process in direct mode with the default connection limits (memory store, rate
 * limits off) and the bench upstream. Agents on 127.0.0.2 run full flows (new mTLS connection,
 * challenge, ES256 proof, token, one gated GET) with a fixed concurrency, first alone, then while
 * an attacker on 127.0.0.1 keeps trying to hold twice the per-address cap: half idle TCP
 * connections that never send a ClientHello, half completed handshakes dribbling a header byte
 * every second; whatever the gate closes or refuses is reopened at once. Reports flows/s and flow
 * latency p50/p99 for both phases, and from the gate's own metrics the connections it held and
 * refused.
 *
 * Flags: `--seconds=N` per phase (default 10), `--concurrency=N` agent flows in flight (default 4),
 * `--gate-root=DIR` a checkout whose src/cli/main.ts runs the gate (default this one).
 * @module
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect } from 'node:tls';
import { Client } from 'undici';
import { createProof } from '../src/client/proof.js';
import { freePort, waitFor } from '../test/helpers/ports.js';
import { ROOT, makePki, startServer } from './bench/setup.js';

const arg = (name: string, def: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? def);
const SECONDS = arg('seconds', 10);
const CONCURRENCY = arg('concurrency', 4);
const GATE_ROOT = process.argv.find((a) => a.startsWith('--gate-root='))?.split('=')[1] ?? ROOT;
const AGENT_ADDR = '127.0.0.2';
const ATTACK_ADDR = '127.0.0.1';
const P = '/.agent-gate';

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;
}

async function metrics(adminPort: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^agent_gate_(connections_refused_total\{limit="(\w+)"\}|open_connections|connection_timeouts_total\{phase="(\w+)"\}) (\d+)/gm)) {
    out[m[2] ? `refused_${m[2]}` : m[3] ? `timeout_${m[3]}` : 'open'] = Number(m[4]);
  }
  return out;
}

/** The attacker process: keeps 2 x cap connection attempts alive, half idle TCP, half dribbling TLS. */
function attackerMain(): void {
  const cap = 128;
  const sockets = new Set<Socket>();
  let opened = 0;
  let stop = false;
  let drip: NodeJS.Timeout | undefined;
  process.on('message', (m: { port?: number; tls?: { ca: string; cert: string; key: string }; stop?: boolean }) => {
    if (m.stop) {
      stop = true;
      clearInterval(drip);
      for (const s of sockets) s.destroy();
      process.send?.({ type: 'stopped', opened }, () => process.exit(0));
      return;
    }
    const { port, tls } = m as { port: number; tls: { ca: string; cert: string; key: string } };
    const open = (kind: 'idle' | 'dribble') => {
      if (stop) return;
      opened++;
      const raw = netConnect({ host: '127.0.0.1', port, localAddress: ATTACK_ADDR });
      let s: Socket = raw;
      if (kind === 'dribble') {
        const t = tlsConnect({ socket: raw, ca: tls.ca, cert: tls.cert, key: tls.key, servername: 'localhost' }, () => t.write('GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: '));
        s = t;
      }
      sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => {
        sockets.delete(s);
        // Reopen, a little later so a refused attempt does not spin.
        setTimeout(() => open(kind), 50).unref();
      });
    };
    for (let i = 0; i < cap; i++) {
      open('idle');
      open('dribble');
    }
    drip = setInterval(() => {
      for (const s of sockets) if (s.writable && 'encrypted' in s) s.write('a');
    }, 1000);
    // Let it reach the cap before the agents measure.
    setTimeout(() => process.send?.({ type: 'ready' }), 2000);
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'agent-gate-slowloris-'));
  const children: ChildProcess[] = [];
  const budget = setTimeout(() => {
    console.error('slowloris bench: over its time budget');
    for (const c of children) c.kill('SIGKILL');
    process.exit(1);
  }, (SECONDS * 2 + 90) * 1000);
  budget.unref();
  try {
    const pki = await makePki(dir);
    const upstream = await startServer('upstream', pki);
    const [port, adminPort] = [await freePort(), await freePort()];
    const gate = spawn(process.execPath, ['--import', 'tsx', join(GATE_ROOT, 'src', 'cli', 'main.ts'), 'serve'], {
      cwd: GATE_ROOT,
      env: {
        PATH: process.env.PATH,
        GATE_ENV: 'dev',
        GATE_LISTEN: `127.0.0.1:${port}`,
        GATE_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
        GATE_TLS_CERT: pki.serverCertFile,
        GATE_TLS_KEY: pki.serverKeyFile,
        GATE_CLIENT_CA: pki.caFile,
        GATE_STORE: 'memory',
        GATE_UPSTREAM_URL: `http://127.0.0.1:${upstream.port}`,
        GATE_RATE_LIMITS: 'off',
        GATE_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(gate);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200, 30_000, 'gate ready', 100);
    const key = createPrivateKey(pki.clientTls.key);

    /** One full flow on a new connection from the agents' address; its duration in ms. */
    async function flow(): Promise<number> {
      const t0 = performance.now();
      const c = new Client(`https://127.0.0.1:${port}`, { localAddress: AGENT_ADDR, connect: { ...pki.clientTls, maxCachedSessions: 0 } });
      try {
        const ch = await c.request({ path: `${P}/v1/challenge`, method: 'POST' });
        const body = (await ch.body.json()) as { challenge_id: string; nonce: string; aud: string };
        if (ch.statusCode !== 201) throw new Error(`challenge ${ch.statusCode}`);
        const proof = await createProof(key, 'ES256', body);
        const tok = await c.request({ path: `${P}/v1/token`, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ challenge_id: body.challenge_id, proof }) });
        const { access_token } = (await tok.body.json()) as { access_token: string };
        if (tok.statusCode !== 200) throw new Error(`token ${tok.statusCode}`);
        const r = await c.request({ path: '/bench', method: 'GET', headers: { authorization: `Bearer ${access_token}` } });
        await r.body.dump();
        if (r.statusCode !== 200) throw new Error(`gated ${r.statusCode}`);
        return performance.now() - t0;
      } finally {
        await c.destroy();
      }
    }

    async function phase(label: string): Promise<{ label: string; flows: number; failed: number; perS: number; p50: number; p99: number }> {
      const samples: number[] = [];
      let failed = 0;
      const end = performance.now() + SECONDS * 1000;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (performance.now() < end) {
            try {
              samples.push(await flow());
            } catch {
              failed++;
            }
          }
        }),
      );
      samples.sort((a, b) => a - b);
      return { label, flows: samples.length, failed, perS: samples.length / SECONDS, p50: pct(samples, 50), p99: pct(samples, 99) };
    }

    for (let i = 0; i < 20; i++) await flow(); // warm-up
    const calm = await phase('no attack');

    // The attacker runs in a process of its own, so its sockets cost the agents' process nothing.
    const attacker = fork(new URL(import.meta.url).pathname, ['--attacker'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.push(attacker);
    const attackerSays = (type: string) => new Promise<{ opened?: number }>((r) => attacker.on('message', (m: { type: string; opened?: number }) => m.type === type && r(m)));
    const attackerReady = attackerSays('ready');
    attacker.send({ port, tls: pki.clientTls });
    await attackerReady;
    let heldMax = 0;
    const sampler = setInterval(() => void metrics(adminPort).then((m) => (heldMax = Math.max(heldMax, m.open ?? 0))), 250);
    const before = await metrics(adminPort);
    const attacked = await phase('attack');
    const after = await metrics(adminPort);
    clearInterval(sampler);
    const attackerDone = attackerSays('stopped');
    attacker.send({ stop: true });
    const { opened } = await attackerDone;

    const row = (p: typeof calm) => `| ${p.label} | ${p.flows} | ${p.failed} | ${p.perS.toFixed(1)} | ${p.p50.toFixed(1)} | ${p.p99.toFixed(1)} |`;
    console.log(`\nslowloris: ${SECONDS} s per phase, ${CONCURRENCY} agent flows in flight from ${AGENT_ADDR}, attacker on ${ATTACK_ADDR} keeping 256 attempts (idle + dribbling) alive\n`);
    console.log('| phase | flows | failed | flows/s | p50 ms | p99 ms |');
    console.log('|---|---|---|---|---|---|');
    console.log(row(calm));
    console.log(row(attacked));
    console.log(`\nattacker connections attempted: ${opened}; gate open connections during the attack (max sampled, agents included): ${heldMax}`);
    console.log(`gate metrics over the attack phase: refused per_address +${(after.refused_per_address ?? 0) - (before.refused_per_address ?? 0)}, refused total +${(after.refused_total ?? 0) - (before.refused_total ?? 0)}, handshake timeouts +${(after.timeout_handshake ?? 0) - (before.timeout_handshake ?? 0)}, request timeouts +${(after.timeout_request ?? 0) - (before.timeout_request ?? 0)}`);
    gate.kill('SIGTERM');
    await upstream.stop();
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--attacker')) attackerMain();
else await main();
