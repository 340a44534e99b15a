/**
 * `npm run bench`: the gate against nginx and Node baselines, on loopback, in one run.
 *
 * Starts redis-server, the upstream, the Node mTLS baseline server, the gate in direct mode
 * (plus a second direct gate logging at info), two nginx baselines (mTLS proxy_pass to the
 * same upstream, 1 worker and `auto`), nginx + a gate in forwarded mode, and the load
 * generator, then measures (each the median of `--runs` runs, interleaved across setups):
 *
 * 1. gated keep-alive requests/s and p50/p99, gate vs nginx proxy_pass (closed loop, 32
 *    connections; also open loop at equal offered load for a latency comparison);
 * 2. full flows/s (new mTLS connection + challenge + proof + token) vs Node mTLS new
 *    connections/s; and complete flows on kept-alive mTLS connections (one per agent) against
 *    a gate with rate limits on (ceilings out of reach) and the same gate config with
 *    GATE_RATE_LIMITS=off: gate CPU per flow and the limiter's share of it;
 * 3. `/v1/token` p50/p99 and on-time share with flows arriving at 50%, 70% and 80% of the
 *    measured max flow rate (open loop);
 * 4. the gate's peak RSS (one worker process);
 * 5. authorizer mode (PROTOCOL.md section 13): nginx in authorizer mode (1 worker) with the
 *    decision cache warm and off, gated keep-alive requests vs the same nginx proxy_pass
 *    baseline in the same rounds, and full flows/s through it.
 *
 * Writes `load/results/<date>.json` and the generated section of `load/RESULTS.md`.
 *
 * Flags: `--quick` (short windows, 1 run: a smoke test, written as `<date>-quick.json`),
 * `--runs=N`, `--profile` (CPU-profile the gate under keep-alive and flow load instead; see
 * load/bench/profile-run.ts), `--authorizer` (only the authorizer rows, short, plus variants that
 * price the njs header screen and the warm-path tuning in nginx CPU per request; see
 * load/bench/authz-run.ts), `--render=load/results/<date>.json` (rewrite that run's
 * RESULTS.md section from its JSON, without measuring).
 * @module
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, release } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import type { Job } from './bench/jobs.js';
import { profileMain } from './bench/profile-run.js';
import { authorizerMain } from './bench/authz-run.js';
import { workersMain } from './bench/workers-run.js';
import { MACHINE, QUIET_CORES, QUIET_TOTAL_MS, killAll, quietWaitedMs, statusKb, waitQuiet } from './bench/procs.js';
import { addProbeCounts, fmt, markdownSection, medianMetrics, metricsOf, targetTable, upsertBlock, detailTable, type BenchData, type RunRecord, type TargetRow } from './bench/report.js';
import { median } from './bench/stats.js';
import {
  AUTHORIZER_EDITS,
  FLOW_DEADLINE_MS,
  FORWARDED_EDITS,
  OUT_OF_REACH_RATE,
  PROBE_TEXT,
  ROOT,
  gateEnv,
  openFlowJob,
  probeSplit,
  startAuthorizer,
  startBase,
  startBaselineNginx,
  startForwarded,
  startGate,
  startLoadgen,
  startServer,
  type BenchPki,
  type CpuGroups,
  type Started,
  type StartedGate,
} from './bench/setup.js';

const args = process.argv.slice(2);
const QUICK = args.includes('--quick');
const PROFILE = args.includes('--profile');
const RUNS = Number(args.find((a) => a.startsWith('--runs='))?.slice('--runs='.length) ?? (QUICK ? 1 : 3));
/** Hard cap on the whole run: children are killed and the process exits 1 beyond it. */
const BUDGET_MS = 8 * 60_000;

/** Windows and sizes. Full: about 5 minutes on a 2-core machine. */
const S = QUICK
  ? { kaWarm: 500, kaDur: 1500, flowWarm: 500, flowDur: 1500, openWarm: 500, openDur: 1500 }
  : { kaWarm: 2000, kaDur: 6000, flowWarm: 1000, flowDur: 5000, openWarm: 1000, openDur: 5000 };
const CONNECTIONS = 32;
const FLOW_CONCURRENCY = 16;
const PREFIX = '/.agent-gate';
const GATED_PATH = '/api/items/42?view=full';

/** Output of a command (stdout, else stderr: `nginx -v` prints to stderr), trailing space trimmed. */
function sh(cmd: string, argv: string[]): string {
  const r = spawnSync(cmd, argv, { encoding: 'utf8' });
  if (r.error) return `n/a (${r.error.message})`;
  return ((r.stdout ?? '').trim() ? r.stdout : (r.stderr ?? '')).replace(/\s+$/, '');
}

function pkgVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'n/a';
  }
}

/** HEAD and whether src/ differs from it: the code base moves while benchmarks run. */
function gitState(): string {
  const head = sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = sh('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src']);
  return `${head}${dirty ? ' + uncommitted changes in src/' : ''}`;
}

function machineInfo(): Record<string, string | number> {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  return {
    nproc: sh('nproc', []),
    'CPU model': /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown',
    'free -h': sh('free', ['-h']),
    kernel: release(),
  };
}

function versions(): Record<string, string> {
  return {
    node: process.version,
    nginx: sh('/usr/sbin/nginx', ['-v']).replace(/^nginx version: /, ''),
    'redis-server': sh('redis-server', ['--version']),
    fastify: pkgVersion('fastify'),
    undici: pkgVersion('undici'),
    jose: pkgVersion('jose'),
    ioredis: pkgVersion('ioredis'),
    pino: pkgVersion('pino'),
    openssl: process.versions.openssl ?? 'n/a',
    'agent-gate commit': gitState(),
  };
}

/** What a fresh client negotiates with a server: protocol, cipher, key exchange group. */
function probeTls(port: number, pki: BenchPki): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pki.clientTls.ca, cert: pki.clientTls.cert, key: pki.clientTls.key });
    s.setTimeout(5000, () => {
      s.destroy();
      resolve('timeout');
    });
    s.once('secureConnect', () => {
      const eph = s.getEphemeralKeyInfo();
      const group = eph && 'name' in eph ? eph.name : eph && 'type' in eph ? eph.type : '?';
      resolve(`${s.getProtocol() ?? '?'} ${s.getCipher().name} ${group}`);
      s.destroy();
    });
    s.once('error', (err) => resolve(`error: ${err.message}`));
  });
}

/** process_resident_memory_bytes from the gate's admin /metrics, in MB. */
async function metricsRssMb(adminPort: number): Promise<number> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    const m = /^process_resident_memory_bytes\s+([0-9.e+]+)/m.exec(text);
    return m ? Number(m[1]) / 1e6 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

const mb = (kb: number) => Math.round((kb / 1024) * 10) / 10;
const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? Math.round((a / b) * 100) / 100 : Number.NaN);

async function main(): Promise<void> {
  const started = new Date();
  const t0 = performance.now();
  const date = started.toISOString().slice(0, 10);
  const cores = availableParallelism();
  const log = (s: string) => process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${s}\n`);
  const { work, pki, redis, upstream, redisUrl, upstreamUrl } = await startBase('bench');
  log(`work dir ${work}; ${RUNS} run(s) per measurement${QUICK ? ' (quick)' : ''}`);
  const tlsBase = await startServer('tls-baseline', pki);
  const gate = await startGate('gate-direct', work, gateEnv(pki, redisUrl, upstreamUrl));
  const gateInfo = await startGate('gate-direct-info', work, gateEnv(pki, redisUrl, upstreamUrl, { GATE_LOG_LEVEL: 'info' }));
  // The direct gate's config with rate limits on (every ceiling out of reach, see gateEnv): the limiter's cost per flow.
  const gateLimits = await startGate('gate-direct-limits', work, gateEnv(pki, redisUrl, upstreamUrl, { GATE_RATE_LIMITS: 'on' }));
  const nginx1 = await startBaselineNginx('nginx-baseline-1', work, pki, upstream.port, '1', cores);
  const nginxAuto = await startBaselineNginx('nginx-baseline-auto', work, pki, upstream.port, 'auto', cores);
  let fwd: { gate: Started; nginx: Started; workers: number } | undefined;
  const notes: string[] = [];
  try {
    fwd = await startForwarded(work, pki, redisUrl, upstreamUrl, cores);
  } catch (err) {
    notes.push(`forwarded setup not measured: ${(err as Error).message.split('\n')[0]}`);
    log(`forwarded setup failed, not measured: ${(err as Error).message}`);
  }
  let authz: { warm: { gate: StartedGate; nginx: Started }; off: { gate: StartedGate; nginx: Started } } | undefined;
  try {
    const warm = await startAuthorizer(work, 'nginx-authz-cache', pki, redisUrl, upstreamUrl, 2);
    authz = { warm, off: await startAuthorizer(work, 'nginx-authz-nocache', pki, redisUrl, upstreamUrl, 0, warm.gate) };
  } catch (err) {
    notes.push(`authorizer setup not measured: ${(err as Error).message.split('\n')[0]}`);
    log(`authorizer setup failed, not measured: ${(err as Error).message}`);
  }
  const lg = await startLoadgen(pki.clientTls);
  const probe = await startLoadgen(pki.clientTls);
  log(`started: redis ${redis.port}, upstream ${upstream.port}, tls-baseline ${tlsBase.port}, gate ${gate.port}, gate-info ${gateInfo.port}, gate-limits ${gateLimits.port}, nginx ${nginx1.port}/${nginxAuto.port}${fwd ? `, forwarded nginx ${fwd.nginx.port} → gate ${fwd.gate.port}` : ''}`);

  const tls: Record<string, string> = {
    gate: await probeTls(gate.port, pki),
    nginx: await probeTls(nginx1.port, pki),
    'tls-baseline': await probeTls(tlsBase.port, pki),
    ...(fwd ? { 'nginx forwarded': await probeTls(fwd.nginx.port, pki) } : {}),
  };

  const origin = (p: Started) => `https://127.0.0.1:${p.port}`;
  const base = { upstream: upstream.pids, loadgen: [lg.pid, probe.pid] };
  const cpu: Record<string, CpuGroups> = {
    gate: { gate: gate.pids, redis: redis.pids, ...base },
    gateInfo: { gate: gateInfo.pids, redis: redis.pids, ...base },
    gateLimits: { gate: gateLimits.pids, redis: redis.pids, ...base },
    nginx1: { nginx: nginx1.pids, ...base },
    nginxAuto: { nginx: nginxAuto.pids, ...base },
    fwd: fwd ? { nginx: fwd.nginx.pids, gate: fwd.gate.pids, redis: redis.pids, ...base } : {},
    tlsBase: { server: tlsBase.pids, loadgen: [lg.pid] },
    authzWarm: authz ? { nginx: authz.warm.nginx.pids, gate: authz.warm.gate.pids, redis: redis.pids, ...base } : {},
    authzOff: authz ? { nginx: authz.off.nginx.pids, gate: authz.warm.gate.pids, redis: redis.pids, ...base } : {},
  };

  const ourPids = () => [process.pid, lg.pid, probe.pid, redis.pid, upstream.pid, tlsBase.pid, gate.pid, gateInfo.pid, gateLimits.pid, ...nginx1.pids, ...nginxAuto.pids, ...(fwd ? [fwd.gate.pid, ...fwd.nginx.pids] : []), ...(authz ? [authz.warm.gate.pid, ...authz.warm.nginx.pids, ...authz.off.nginx.pids] : [])];
  const foreignBefore: Record<string, number[]> = {};
  const runs: Record<string, RunRecord[]> = {};
  /** One measurement; `probeJob`, if any, runs on the probe in the same window (its record under `key.probe`). */
  const record = async (key: string, job: Job, groups: CpuGroups, probeJob?: Job) => {
    (foreignBefore[key] ??= []).push(await waitQuiet(ourPids, 5000));
    const [r, p] = await Promise.all([lg.run(job, groups), probeJob ? probe.run(probeJob, {}) : undefined]);
    (runs[key] ??= []).push(r);
    if (p) (runs[`${key}.probe`] ??= []).push(p);
    addProbeCounts(r, p);
    const res = r.result;
    const summary =
      res.kind === 'keepalive'
        ? `${fmt(res.rps)} rps p50 ${res.latency.p50} p99 ${res.latency.p99} ms, errors ${res.errors}`
        : res.kind === 'flow'
          ? `${fmt(res.rate, 1)}/s flow p50 ${res.flow.p50} p99 ${res.flow.p99} ms, token p99 ${res.token.p99} ms, errors ${res.errors}`
          : `${res.ok}/${res.scheduled} ok, ${res.onTime} within ${FLOW_DEADLINE_MS} ms, expired ${res.expired}, failed ${res.failed}, token p50 ${res.token.p50} p99 ${res.token.p99} ms`;
    const other = r.cpuSeconds[MACHINE] !== undefined && r.windowS > 0 ? (r.cpuSeconds[MACHINE] - Object.entries(r.cpuSeconds).filter(([k]) => k !== MACHINE).reduce((a, [, v]) => a + v, 0)) / r.windowS : 0;
    log(`${key.padEnd(14)} ${summary}${other > QUIET_CORES ? ` [other processes used ${other.toFixed(2)} cores]` : ''}${res.examples.length ? ` (e.g. ${res.examples[0]})` : ''}`);
    return r;
  };
  const ka = (o: string, tokenPrefix?: string, rate?: number): Job => ({
    kind: 'keepalive',
    origin: o,
    path: GATED_PATH,
    connections: CONNECTIONS,
    warmupMs: S.kaWarm,
    durationMs: S.kaDur,
    ...(tokenPrefix !== undefined ? { tokenPrefix } : {}),
    ...(rate ? { rate } : {}),
  });

  // 1. Keep-alive, closed loop.
  for (let i = 0; i < RUNS; i++) {
    await record('ka.gate', ka(origin(gate), PREFIX), cpu.gate!);
    await record('ka.nginx', ka(origin(nginx1)), cpu.nginx1!);
    if (fwd) await record('ka.fwd', ka(origin(fwd.nginx), PREFIX), cpu.fwd!);
    await record('ka.gate-info', ka(origin(gateInfo), PREFIX), cpu.gateInfo!);
    await record('ka.nginx-auto', ka(origin(nginxAuto)), cpu.nginxAuto!);
    if (authz) {
      await record('ka.authz', ka(origin(authz.warm.nginx), PREFIX), cpu.authzWarm!);
      await record('ka.authz-off', ka(origin(authz.off.nginx), PREFIX), cpu.authzOff!);
    }
  }
  // 1b. Keep-alive, open loop at the same offered load for both (half the gate's max).
  const kaRate = Math.max(100, Math.round((medianMetrics(runs['ka.gate'] ?? []).rps ?? 0) * 0.5));
  for (let i = 0; i < RUNS; i++) {
    await record('kaopen.gate', ka(origin(gate), PREFIX, kaRate), cpu.gate!);
    await record('kaopen.nginx', ka(origin(nginx1), undefined, kaRate), cpu.nginx1!);
  }
  // 2. New connection per flow, closed loop.
  const flow = (o: string, mode: 'gate' | 'tls'): Job => ({ kind: 'flow', mode, origin: o, prefix: PREFIX, concurrency: FLOW_CONCURRENCY, warmupMs: S.flowWarm, durationMs: S.flowDur });
  for (let i = 0; i < RUNS; i++) {
    await record('flow.gate', flow(origin(gate), 'gate'), cpu.gate!);
    await record('flow.tls', flow(origin(tlsBase), 'tls'), cpu.tlsBase!);
    if (fwd) await record('flow.fwd', flow(origin(fwd.nginx), 'gate'), cpu.fwd!);
    if (authz) await record('flow.authz', flow(origin(authz.warm.nginx), 'gate'), cpu.authzWarm!);
  }
  // 2b. Complete flows on kept-alive connections (one per agent, FLOW_CONCURRENCY agents), rate
  // limits on vs off in the same rounds: the flow's own CPU without a handshake per flow.
  const flowKa = (o: string): Job => ({ kind: 'flow', mode: 'gate', origin: o, prefix: PREFIX, concurrency: FLOW_CONCURRENCY, warmupMs: S.flowWarm, durationMs: S.flowDur, keepAlive: true });
  for (let i = 0; i < RUNS; i++) {
    await record('flowka.limits', flowKa(origin(gateLimits)), cpu.gateLimits!);
    await record('flowka.nolimits', flowKa(origin(gate)), cpu.gate!);
  }
  // 3. Open-loop flows at fractions of the max flow rate.
  const maxFlow = medianMetrics(runs['flow.gate'] ?? []).rate ?? 0;
  const maxFlowFwd = fwd ? (medianMetrics(runs['flow.fwd'] ?? []).rate ?? 0) : 0;
  const pcts = [50, 70, 80];
  const openJob = (o: string, rate: number): Job => openFlowJob(o, rate, { warmupMs: S.openWarm, durationMs: S.openDur });
  /** `rate` flows/s in all: the probe's share from the probe, the rest from the load generator. */
  const openRecord = async (key: string, o: Started, rate: number, groups: CpuGroups) => {
    const split = probeSplit(rate);
    await record(key, openJob(origin(o), split.main), groups, openJob(origin(o), split.probe));
  };
  for (let i = 0; i < RUNS; i++) {
    for (const pct of pcts) await openRecord(`open.${pct}`, gate, Math.max(2, Math.round((maxFlow * pct) / 100)), cpu.gate!);
    // The same at 70% through nginx + forwarded gate: TLS handshakes leave the gate's event loop.
    if (fwd) await openRecord('openfwd.70', fwd.nginx, Math.max(2, Math.round(maxFlowFwd * 0.7)), cpu.fwd!);
  }

  // 4. Memory, after everything.
  const memory: Record<string, number> = {
    'gate direct VmHWM (peak RSS)': mb(statusKb(gate.pid, 'VmHWM')),
    'gate direct VmRSS (now)': mb(statusKb(gate.pid, 'VmRSS')),
    'gate direct process_resident_memory_bytes (admin /metrics)': Math.round((await metricsRssMb(gate.adminPort)) * 10) / 10,
    'gate direct, info logs, VmHWM': mb(statusKb(gateInfo.pid, 'VmHWM')),
    ...(fwd ? { 'gate forwarded VmHWM': mb(statusKb(fwd.gate.pid, 'VmHWM')) } : {}),
    'nginx baseline worker VmHWM': mb(statusKb(nginx1.pids[0] ?? 0, 'VmHWM')),
    'load generator VmHWM': mb(statusKb(lg.pid, 'VmHWM')),
  };

  const medians: Record<string, ReturnType<typeof medianMetrics>> = {};
  for (const [k, v] of Object.entries(runs)) medians[k] = medianMetrics(v);
  const M = (k: string) => medians[k] ?? {};
  /** Median over rounds of run-by-run ratios a/b of `field`: adjacent runs share the machine's state, so this resists drift. */
  const paired = (a: string, b: string, field: string) => {
    const ra = (runs[a] ?? []).map((r) => metricsOf(r)[field]);
    const rb = (runs[b] ?? []).map((r) => metricsOf(r)[field]);
    const rs = ra.map((v, i) => ratio(v, rb[i])).filter((v) => !Number.isNaN(v));
    return Math.round(median(rs) * 100) / 100;
  };
  /** {@link paired} across two fields (the gate's own CPU against nginx's). */
  const paired2 = (a: string, fa: string, b: string, fb: string) => {
    const ra = (runs[a] ?? []).map((r) => metricsOf(r)[fa]);
    const rb = (runs[b] ?? []).map((r) => metricsOf(r)[fb]);
    return Math.round(median(ra.map((v, i) => ratio(v, rb[i])).filter((v) => !Number.isNaN(v))) * 100) / 100;
  };
  const both = (r: number, p: number) => `${fmt(r, 2)} (per round: ${fmt(p, 2)})`;

  const targets: TargetRow[] = [];
  {
    const g = M('ka.gate');
    const n = M('ka.nginx');
    const r = ratio(g.rps, n.rps);
    targets.push({ id: '1a', measurement: `gated keep-alive requests/s (closed loop, ${CONNECTIONS} conns)`, gate: fmt(g.rps), baseline: `${fmt(n.rps)} (nginx, 1 worker)`, ratio: both(r, paired('ka.gate', 'ka.nginx', 'rps')), target: '≥ 0.6', pass: r >= 0.6, values: { gate: g.rps ?? NaN, baseline: n.rps ?? NaN, ratio: r, pairedRatio: paired('ka.gate', 'ka.nginx', 'rps') } });
    targets.push({ id: '1b', measurement: 'gated keep-alive p50 latency (same closed loop)', gate: `${fmt(g.p50, 2)} ms`, baseline: `${fmt(n.p50, 2)} ms`, ratio: fmt(ratio(g.p50, n.p50), 2), target: '–', pass: null });
    const r99 = ratio(g.p99, n.p99);
    targets.push({ id: '1c', measurement: 'gated keep-alive p99 latency (same closed loop)', gate: `${fmt(g.p99, 2)} ms`, baseline: `${fmt(n.p99, 2)} ms`, ratio: both(r99, paired('ka.gate', 'ka.nginx', 'p99')), target: '≤ 2', pass: r99 <= 2, values: { gate: g.p99 ?? NaN, baseline: n.p99 ?? NaN, ratio: r99, pairedRatio: paired('ka.gate', 'ka.nginx', 'p99') } });
    const go = M('kaopen.gate');
    const no = M('kaopen.nginx');
    targets.push({ id: '1d', measurement: `p99 at equal offered load (open loop, ${fmt(kaRate)} req/s each)`, gate: `${fmt(go.p99, 2)} ms`, baseline: `${fmt(no.p99, 2)} ms`, ratio: both(ratio(go.p99, no.p99), paired('kaopen.gate', 'kaopen.nginx', 'p99')), target: '(≤ 2)', pass: null });
    const na = M('ka.nginx-auto');
    targets.push({ id: '1e', measurement: 'gated keep-alive requests/s vs nginx with `worker_processes auto`', gate: fmt(g.rps), baseline: `${fmt(na.rps)} (nginx, ${cores} workers)`, ratio: both(ratio(g.rps, na.rps), paired('ka.gate', 'ka.nginx-auto', 'rps')), target: '(≥ 0.6)', pass: null });
    if (fwd) {
      const f = M('ka.fwd');
      targets.push({ id: '1f', measurement: 'forwarded mode (nginx + gate) keep-alive requests/s', gate: fmt(f.rps), baseline: `${fmt(n.rps)} (nginx)`, ratio: both(ratio(f.rps, n.rps), paired('ka.fwd', 'ka.nginx', 'rps')), target: '–', pass: null });
    }
    const cpuR = ratio(g.serverCpuUsPerOp, n.serverCpuUsPerOp);
    targets.push({ id: '1g', measurement: 'server-side CPU per gated request (gate + upstream + redis vs nginx + upstream)', gate: `${fmt(g.serverCpuUsPerOp)} µs`, baseline: `${fmt(n.serverCpuUsPerOp)} µs`, ratio: both(cpuR, paired('ka.gate', 'ka.nginx', 'serverCpuUsPerOp')), target: '–', pass: null });
    const gCpu = g.gateCpuUsPerOp;
    targets.push({
      id: '1m',
      measurement: 'gate CPU per gated request (the gate process alone, same closed loop; baseline: the nginx worker alone)',
      gate: `${fmt(gCpu)} µs`,
      baseline: `${fmt(n.nginxCpuUsPerOp)} µs (nginx)`,
      ratio: both(ratio(gCpu, n.nginxCpuUsPerOp), paired2('ka.gate', 'gateCpuUsPerOp', 'ka.nginx', 'nginxCpuUsPerOp')),
      target: '≤ 100 µs',
      pass: gCpu !== undefined && !Number.isNaN(gCpu) ? gCpu <= 100 : false,
      values: { gateCpuUsPerOp: gCpu ?? NaN, nginxCpuUsPerOp: n.nginxCpuUsPerOp ?? NaN, serverCpuUsPerOp: g.serverCpuUsPerOp ?? NaN },
    });
    const gi = M('ka.gate-info');
    targets.push({ id: '1h', measurement: 'gate with GATE_LOG_LEVEL=info (access log per request) vs warn', gate: `${fmt(gi.rps)} (info)`, baseline: `${fmt(g.rps)} (warn)`, ratio: both(ratio(gi.rps, g.rps), paired('ka.gate-info', 'ka.gate', 'rps')), target: '–', pass: null });
    if (authz) {
      // Authorizer mode (section 13) against the same nginx baseline, same rounds.
      const rows: [string, string, string, string, number, number][] = [
        ['1i', 'authorizer mode, decision cache warm: gated keep-alive requests/s', 'ka.authz', 'rps', 0.9, 1],
        ['1j', 'authorizer mode, decision cache warm: p99', 'ka.authz', 'p99', 1.5, -1],
        ['1k', 'authorizer mode, cache off (the gate decides every request): requests/s', 'ka.authz-off', 'rps', 0.6, 1],
        ['1l', 'authorizer mode, cache off: p99', 'ka.authz-off', 'p99', 2, -1],
      ];
      for (const [id, measurement, key, field, goal, dir] of rows) {
        const a = M(key)[field];
        const b = n[field];
        const r = ratio(a, b);
        const ms = field === 'p99' ? ' ms' : '';
        targets.push({ id, measurement, gate: `${fmt(a, ms ? 2 : 0)}${ms}`, baseline: `${fmt(b, ms ? 2 : 0)}${ms} (nginx)`, ratio: both(r, paired(key, 'ka.nginx', field)), target: `${dir > 0 ? '≥' : '≤'} ${goal}`, pass: dir > 0 ? r >= goal : r <= goal, values: { gate: a ?? NaN, baseline: b ?? NaN, ratio: r, pairedRatio: paired(key, 'ka.nginx', field) } });
      }
    }
  }
  {
    const g = M('flow.gate');
    const b = M('flow.tls');
    const r = ratio(g.rate, b.rate);
    targets.push({ id: '2', measurement: `full flows/s (new mTLS conn + challenge + proof + token, ${FLOW_CONCURRENCY} in flight)`, gate: fmt(g.rate, 1), baseline: `${fmt(b.rate, 1)} (Node https new conns/s)`, ratio: both(r, paired('flow.gate', 'flow.tls', 'rate')), target: '≥ 0.8', pass: r >= 0.8, values: { gate: g.rate ?? NaN, baseline: b.rate ?? NaN, ratio: r, pairedRatio: paired('flow.gate', 'flow.tls', 'rate') } });
    if (fwd) {
      const f = M('flow.fwd');
      targets.push({ id: '2b', measurement: 'full flows/s through nginx + forwarded gate', gate: fmt(f.rate, 1), baseline: `${fmt(b.rate, 1)} (Node https)`, ratio: both(ratio(f.rate, b.rate), paired('flow.fwd', 'flow.tls', 'rate')), target: '–', pass: null });
    }
    if (authz) targets.push({ id: '2d', measurement: 'full flows/s through nginx in authorizer mode', gate: fmt(M('flow.authz').rate, 1), baseline: `${fmt(b.rate, 1)} (Node https)`, ratio: both(ratio(M('flow.authz').rate, b.rate), paired('flow.authz', 'flow.tls', 'rate')), target: '–', pass: null });
    const cpuRatio = ratio(g.serverCpuUsPerOp, b.serverCpuUsPerOp);
    const implied = Math.round((1 / cpuRatio) * 100) / 100;
    targets.push({
      id: '2c',
      measurement: 'server-side CPU per flow vs per new mTLS connection (and the flow ratio it implies when the servers, not the load generator, are the bottleneck)',
      gate: `${fmt(g.serverCpuUsPerOp)} µs`,
      baseline: `${fmt(b.serverCpuUsPerOp)} µs`,
      ratio: `${both(cpuRatio, paired('flow.gate', 'flow.tls', 'serverCpuUsPerOp'))} → ${fmt(implied, 2)}`,
      target: '(≥ 0.8)',
      pass: null,
      values: { gate: g.serverCpuUsPerOp ?? NaN, baseline: b.serverCpuUsPerOp ?? NaN, ratio: cpuRatio, impliedFlowRatio: implied },
    });
  }
  {
    // Complete flows on kept-alive connections, rate limits on (ceilings out of reach) vs off.
    const on = M('flowka.limits');
    const off = M('flowka.nolimits');
    const gOn = on.gateCpuUsPerOp;
    targets.push({
      id: '2e',
      measurement: `gate CPU per complete flow (challenge + proof + token) on kept-alive mTLS connections, one per agent, ${FLOW_CONCURRENCY} agents in flight; ES256, Redis store, rate limits on (ceilings out of reach)`,
      gate: `${fmt(gOn)} µs (gate + redis ${fmt(on.serverCpuUsPerOp)} µs; ${fmt(on.rate, 1)} flows/s, errors ${fmt(on.errors)})`,
      baseline: '–',
      ratio: '–',
      target: '≤ 350 µs',
      pass: gOn !== undefined && !Number.isNaN(gOn) && (on.errors ?? 0) === 0 ? gOn <= 350 : false,
      values: { gateCpuUsPerOp: gOn ?? NaN, serverCpuUsPerOp: on.serverCpuUsPerOp ?? NaN, rate: on.rate ?? NaN, errors: on.errors ?? NaN },
    });
    /** Per-round differences on − off of `field`: adjacent runs share the machine's state. */
    const pairedDiff = (field: string) => {
      const a = (runs['flowka.limits'] ?? []).map((r) => metricsOf(r)[field]);
      const b = (runs['flowka.nolimits'] ?? []).map((r) => metricsOf(r)[field]);
      const d = a.map((v, i) => (v !== undefined && b[i] !== undefined ? v - b[i] : Number.NaN)).filter((v) => !Number.isNaN(v));
      return Math.round(median(d));
    };
    const cost = (gOn ?? NaN) - (off.gateCpuUsPerOp ?? NaN);
    const costServer = (on.serverCpuUsPerOp ?? NaN) - (off.serverCpuUsPerOp ?? NaN);
    targets.push({
      id: '2f',
      measurement: "the rate limiter's cost per kept-alive flow: row 2e minus the same flows with GATE_RATE_LIMITS=off (dev-only), same rounds",
      gate: `${fmt(cost)} µs gate (per round: ${fmt(pairedDiff('gateCpuUsPerOp'))}); gate + redis ${fmt(costServer)} µs (per round: ${fmt(pairedDiff('serverCpuUsPerOp'))})`,
      baseline: `${fmt(off.gateCpuUsPerOp)} µs gate, ${fmt(off.serverCpuUsPerOp)} µs gate + redis, limits off (${fmt(off.rate, 1)} flows/s)`,
      ratio: both(ratio(gOn, off.gateCpuUsPerOp), paired('flowka.limits', 'flowka.nolimits', 'gateCpuUsPerOp')),
      target: '–',
      pass: null,
      values: { gateCostUs: cost, serverCostUs: costServer, gateCostUsPaired: pairedDiff('gateCpuUsPerOp'), serverCostUsPaired: pairedDiff('serverCpuUsPerOp'), offGateCpuUsPerOp: off.gateCpuUsPerOp ?? NaN, offServerCpuUsPerOp: off.serverCpuUsPerOp ?? NaN },
    });
  }
  for (const pct of pcts) {
    const o = M(`open.${pct}`);
    const pr = M(`open.${pct}.probe`);
    const tokenTarget = pct === 70 ? pr.tokenP99 !== undefined && pr.tokenP99 < 10 : null;
    targets.push({
      id: `3-${pct}`,
      measurement: `\`/v1/token\` p50 / p99 at ${pct}% of max flow rate (${fmt(o.targetRate)} flows/s, ${fmt(pr.targetRate)} of them from the probe), as the probe sees it; in brackets the main load generator's own view and its scheduler lag p99`,
      gate: `${fmt(pr.tokenP50, 2)} / ${fmt(pr.tokenP99, 2)} ms (load generator: ${fmt(o.tokenP50, 2)} / ${fmt(o.tokenP99, 2)} ms, lag ${fmt(o.schedLagP99, 1)} ms)`,
      baseline: '–',
      ratio: '–',
      target: pct === 70 ? 'p99 < 10 ms' : '–',
      pass: tokenTarget,
      values: { tokenP50: pr.tokenP50 ?? NaN, tokenP99: pr.tokenP99 ?? NaN, loadgenTokenP50: o.tokenP50 ?? NaN, loadgenTokenP99: o.tokenP99 ?? NaN, loadgenSchedLagP99: o.schedLagP99 ?? NaN },
    });
    targets.push({
      id: `3-${pct}d`,
      measurement: `proofs accepted on time / flows done within ${FLOW_DEADLINE_MS} ms at ${pct}%`,
      gate: `${fmt(o.okPct, 2)}% / ${fmt(o.onTimePct, 2)}%`,
      baseline: '–',
      ratio: '–',
      target: pct === 80 ? '100%' : '–',
      pass: pct === 80 ? o.okPct === 100 && o.onTimePct === 100 : null,
      values: { okPct: o.okPct ?? NaN, onTimePct: o.onTimePct ?? NaN },
    });
  }
  if (fwd) {
    const o = M('openfwd.70');
    const pr = M('openfwd.70.probe');
    targets.push({
      id: '3-70f',
      measurement: `\`/v1/token\` p50 / p99 at 70% of the forwarded max (${fmt(o.targetRate)} flows/s), nginx + forwarded gate, as the probe sees it (load generator's own view in brackets); on time`,
      gate: `${fmt(pr.tokenP50, 2)} / ${fmt(pr.tokenP99, 2)} ms (${fmt(o.tokenP50, 2)} / ${fmt(o.tokenP99, 2)} ms); ${fmt(o.onTimePct, 2)}%`,
      baseline: '–',
      ratio: '–',
      target: '(p99 < 10 ms)',
      pass: null,
    });
  }
  const hwm = memory['gate direct VmHWM (peak RSS)'] ?? NaN;
  targets.push({ id: '4', measurement: 'gate peak RSS per worker (VmHWM of the direct gate, one worker process, after all runs)', gate: `${fmt(hwm, 1)} MB`, baseline: '–', ratio: '–', target: '< 200 MB', pass: hwm < 200, values: { mb: hwm } });

  notes.push(
    'nginx baseline: `worker_processes 1` because the gate is one Node process; `worker_processes auto` is row 1e. Both: access_log off, keepalive 64 to the upstream, keepalive_requests raised so neither side reconnects mid-run.',
    `forwarded setup: config from renderNginxConfig, ${FORWARDED_EDITS}; otherwise as rendered (worker_processes auto, JSON access log on, njs signing per request). Gate on plain HTTP loopback, GATE_FWD_TRUSTED_PROXIES=127.0.0.1/32.`,
    ...(authz ? [`authorizer setup (rows 1i-1l, 2d): config from renderNginxConfig --mode authorizer, ${AUTHORIZER_EDITS}; otherwise as rendered (JSON access log on, buffered; njs header screen per gated request, njs signing per decision). Decision cache 2 s (warm after the first request) or off; gate in authorizer mode on plain HTTP loopback.`] : []),
    `gates: GATE_ENV=dev, GATE_WORKERS=1 (dev default: one process), GATE_STORE=redis (own redis-server), GATE_RATE_LIMITS=off (dev-only) except the gate of row 2e (on), every GATE_RATE_* ceiling at ${OUT_OF_REACH_RATE} (out of reach, GATE_RATE_REFUSAL_IDENTITY included), GATE_MAX_INFLIGHT=100000, GATE_MAX_CONNECTIONS=100000 and GATE_MAX_CONNECTIONS_PER_ADDRESS=100000 (all load comes from 127.0.0.1; the default 128 per address would reset open-loop connections), GATE_LOG_LEVEL=warn (one gate at info for row 1h), logs to a file; ephemeral Ed25519 signing key; revocation off (dev default).`,
    'gate CPU (rows 1m, 2e, 2f) is the gate process alone; server CPU adds redis and the upstream. Rows 2e/2f use one agent certificate on every connection (each connection is one agent).',
    `machine sharing: before each run the bench waits (up to 5 s, ${QUIET_TOTAL_MS / 1000} s in all; waited ${Math.round(quietWaitedMs() / 1000)} s) until other processes use < ${QUIET_CORES} cores; the "other" CPU column shows what they used during each window anyway.`,
    'CPU figures are /proc utime+stime of each process over the measurement window; "server CPU/op" excludes the load generator. Load generator, servers and redis share the same cores, so absolute rates are noisy; compare ratios and CPU per op.',
  );

  const finished = new Date();
  const data: BenchData = {
    date,
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationS: Math.round((performance.now() - t0) / 100) / 10,
    command: `npm run bench${args.length ? ' -- ' + args.join(' ') : ''}`,
    quick: QUICK,
    machine: machineInfo(),
    versions: versions(),
    tls,
    settings: {
      runs: RUNS,
      'keep-alive connections': CONNECTIONS,
      'keep-alive warm-up / window (ms)': `${S.kaWarm} / ${S.kaDur}`,
      'gated request': `GET ${GATED_PATH} with Bearer token (upstream answers ~60 B JSON)`,
      'flow concurrency (closed loop)': FLOW_CONCURRENCY,
      'kept-alive flows (rows 2e, 2f)': `${FLOW_CONCURRENCY} agents, one kept-alive connection each, flows back to back`,
      'flow warm-up / window (ms)': `${S.flowWarm} / ${S.flowDur}`,
      'open-loop warm-up / window (ms)': `${S.openWarm} / ${S.openDur}`,
      'max flow rate (median closed-loop gate flows/s)': maxFlow,
      'max flow rate, forwarded (median closed-loop flows/s)': maxFlowFwd,
      'open-loop keep-alive rate (half the gate max)': kaRate,
      'flow deadline (ms)': FLOW_DEADLINE_MS,
      'open-loop latency probe': `${PROBE_TEXT}; rows 3-* report its /v1/token latency`,
      'agent key': 'ECDSA P-256, proof ES256 (node:crypto, ieee-p1363)',
      'Node TLS servers (gates, Node baseline)': 'OPENSSL_CONF=deploy/node-openssl.cnf as in the image (one TLS 1.3 ticket per full handshake)',
      'nginx baseline workers': `1 and auto (${cores})`,
      'forwarded nginx workers': fwd ? fwd.workers : 'not measured',
    },
    runs,
    foreignCoresBeforeRun: foreignBefore,
    medians,
    memory,
    targets,
    notes,
  };

  const resultsDir = join(ROOT, 'load', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const jsonFile = join(resultsDir, `${date}${QUICK ? '-quick' : ''}.json`);
  writeFileSync(jsonFile, JSON.stringify(data, null, 2) + '\n');
  if (!QUICK) upsertBlock(join(ROOT, 'load', 'RESULTS.md'), `bench:${date}`, markdownSection(data));

  process.stdout.write('\n' + targetTable(targets) + '\n\n' + detailTable(data) + '\n\n');
  for (const [k, v] of Object.entries(memory)) process.stdout.write(`${k}: ${fmt(v, 1)} MB\n`);
  process.stdout.write(`\nwrote ${jsonFile}${QUICK ? '' : ' and load/RESULTS.md'} (${data.durationS} s)\n`);

  await lg.stop();
  await probe.stop();
  for (const p of [authz?.off.nginx, authz?.warm.nginx, authz?.warm.gate, fwd?.nginx, fwd?.gate, nginxAuto, nginx1, gateLimits, gateInfo, gate, tlsBase, upstream, redis]) await p?.stop();
  rmSync(work, { recursive: true, force: true });
}

const watchdog = setTimeout(() => {
  process.stderr.write(`bench: over the ${BUDGET_MS / 60_000} minute budget, stopping\n`);
  process.exit(1);
}, BUDGET_MS);
watchdog.unref();

/** `--render=<results json>`: rewrites that run's RESULTS.md section from its JSON (after a report format change). */
async function render(file: string): Promise<void> {
  const data = JSON.parse(readFileSync(file, 'utf8')) as BenchData;
  upsertBlock(join(ROOT, 'load', 'RESULTS.md'), `bench:${data.date}`, markdownSection(data));
  process.stdout.write(targetTable(data.targets) + '\n\nrewrote the ' + data.date + ' section of load/RESULTS.md\n');
}

const RENDER = args.find((a) => a.startsWith('--render='))?.slice('--render='.length);
(RENDER ? render(RENDER) : PROFILE ? profileMain(args) : args.includes('--authorizer') ? authorizerMain(args) : args.includes('--workers') ? workersMain(args) : main()).then(
  () => {
    killAll();
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
