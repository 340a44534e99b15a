/**
 * `npx tsx load/bench/authz-ab.ts [--rounds=N] [--path=TARGET] [--strace]`: what one gated request costs the
 * nginx worker in authorizer mode, part by part, with the decision cache warm. Measured as the
 * worker's own CPU (/proc utime+stime) per request, interleaved rounds, medians: steadier than
 * requests/s on a shared machine, where the other processes take the cores in turns. Variants:
 * baseline (plain mTLS proxy_pass), rendered (as `nginx-config --mode authorizer` renders it),
 * noop-screen (the header screen's js_set kept, its body empty: the njs VM alone),
 * no-screen (without the header screen), first (also without the access-log buffer and
 * open_file_cache, no pcre_jit: the config as first built), no-jit (the rendered config with `pcre_jit off`:
 * what compiling the path rules saves, most on a long --path). With --strace, also syscalls per request of
 * each worker (strace -c), after the timed rounds.
 * @module
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Job } from './jobs.js';
import { startAuthorizer, startBase, startBaselineNginx, type Started, startLoadgen } from './setup.js';
import { median } from './stats.js';

const args = process.argv.slice(2);
const ROUNDS = Number(args.find((a) => a.startsWith('--rounds='))?.slice('--rounds='.length) ?? 5);
// The gated request's target: a short one by default; a long one shows what the path rules cost.
const PATH = args.find((a) => a.startsWith('--path='))?.slice('--path='.length) ?? '/api/items/42';
const { work, pki, redis, upstream: up, redisUrl, upstreamUrl: upUrl } = await startBase('authz-ab');
const base = await startBaselineNginx('baseline', work, pki, up.port, '1', 2);
const rendered = await startAuthorizer(work, 'rendered', pki, redisUrl, upUrl, 2);
const noScreen = await startAuthorizer(work, 'no-screen', pki, redisUrl, upUrl, 2, rendered.gate, 'no-screen');
const noop = await startAuthorizer(work, 'noop-screen', pki, redisUrl, upUrl, 2, rendered.gate);
const first = await startAuthorizer(work, 'first', pki, redisUrl, upUrl, 2, rendered.gate, 'unbuffered');
const noJit = await startAuthorizer(work, 'no-jit', pki, redisUrl, upUrl, 2, rendered.gate, 'no-jit');
// noop-screen: the rendered config whose screen function returns at once; reloaded into effect.
const js = join(work, 'noop-screen', 'gate_sign.js');
writeFileSync(js, readFileSync(js, 'utf8').replace('function badHeaders(r) {', 'function badHeaders(r) {\n    return "";'));
execFileSync('kill', ['-HUP', String(noop.nginx.pid)]);
await new Promise((r) => setTimeout(r, 1500));
const workerOf = (n: Started) => Number(execFileSync('pgrep', ['-P', String(n.pid)]).toString().trim().split('\n')[0]);
const lg = await startLoadgen(pki.clientTls);
const variants: [string, Started, boolean][] = [
  ['baseline', base, false],
  ['rendered', rendered.nginx, true],
  ['noop-screen', noop.nginx, true],
  ['no-screen', noScreen.nginx, true],
  ['first', first.nginx, true],
  ['no-jit', noJit.nginx, true],
];
const job = (n: Started, token: boolean): Job => ({ kind: 'keepalive', origin: `https://127.0.0.1:${n.port}`, path: PATH, connections: 16, warmupMs: 300, durationMs: 2000, ...(token ? { tokenPrefix: '/.agent-gate' } : {}) });
const cpuOf = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};
const us: Record<string, number[]> = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, n, token] of variants) {
    const w = workerOf(n);
    let c0 = 0;
    let used = 0;
    const r = await lg.run(job(n, token), {}, (phase) => {
      if (phase === 'start') c0 = cpuOf(w);
      else used = cpuOf(w) - c0;
    });
    const done = r.result.kind === 'keepalive' ? r.result.completed : 0;
    (us[name] ??= []).push((used / Math.max(1, done)) * 1e6);
  }
}
process.stdout.write(`load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}; ${ROUNDS} rounds of 2 s, 16 keep-alive connections, target of ${PATH.length} bytes\n`);
for (const [name, v] of Object.entries(us)) process.stdout.write(`${name.padEnd(12)} nginx worker CPU per request: median ${median(v).toFixed(1)} µs (rounds ${v.map((x) => x.toFixed(0)).join(' ')})\n`);
if (args.includes('--strace')) {
  for (const [name, n, token] of variants) {
    const st = spawn('strace', ['-c', '-f', '-p', String(workerOf(n))], { stdio: ['ignore', 'ignore', 'pipe'] });
    let out = '';
    st.stderr.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((r) => setTimeout(r, 300));
    const r = await lg.run(job(n, token), {});
    st.kill('SIGINT');
    await new Promise((r) => st.on('exit', r));
    const done = r.result.kind === 'keepalive' ? r.result.completed : 1;
    const total = out.split('\n').find((l) => /\btotal$/.test(l.trim()))?.trim().split(/\s+/);
    const calls = out.split('\n').filter((l) => /^\s*[0-9.]+\s+[0-9.]+\s+\d+\s+\d+/.test(l)).map((l) => l.trim().split(/\s+/)).filter((c) => Number(c[3]) / done >= 0.05);
    process.stdout.write(`${name.padEnd(12)} syscalls per request ≈ ${total ? (Number(total[2]) / done).toFixed(1) : '?'} (${calls.map((c) => `${c.at(-1)} ${(Number(c[3]) / done).toFixed(2)}`).join(', ')}; the warm-up's requests counted too)\n`);
  }
}
await lg.stop();
for (const p of [noJit.nginx, first.nginx, noop.nginx, noScreen.nginx, rendered.nginx, rendered.gate, base, up, redis]) await p.stop();
rmSync(work, { recursive: true, force: true });
