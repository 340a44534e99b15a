/**
 * `npm run load:smoke`: every k6 scenario of `load/k6/` for a few seconds at a low rate against
 * gates started here, on loopback only, with the functional thresholds enforced (no 5xx,
 * exactly one token per challenge, well-behaved agent unharmed). Latency and capacity
 * thresholds belong to real load runs (`K6_PERF_THRESHOLDS=off` here).
 *
 * What it starts, all on random loopback ports and all torn down at the end:
 * - a PKI in a temp dir (CA, server certificate for localhost/127.0.0.1, one P-256 agent per
 *   script, and three for `abuse.js`: two flooding agents and the well-behaved one);
 * - redis-server when it is on PATH (else the memory store), and a small upstream;
 * - gate A (rate limits off) and, with redis, gate A2 sharing its store and signing key, so the
 *   replay storm spreads each proof over two instances;
 * - gate B (rate limits on, small per-identity limits, a generous per-address one) for `abuse.js`.
 *
 * Without k6 on PATH it prints one line saying so and exits 0 (skipped, not passed);
 * `--require-k6` makes that an error. `--serve` only starts the environment and prints the
 * variables to run the scripts by hand. `--keep` keeps the temp dir (kept anyway on failure);
 * `--only=a.js,b.js` runs some scripts; `--store=memory|redis` picks the store.
 * @module
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pino from 'pino';
import { buildGate, type Gate } from '../src/app.js';
import { formatViolation, loadConfig } from '../src/config/index.js';
import { createCa, issueAgentCert, issueServerCert, type KeyAndCert } from '../src/pki/index.js';
import { generateSigningJwk } from '../src/tokens/index.js';
import { startRedis, type RedisServer } from '../test/helpers/redis.js';

/** Outcome of one k6 script. */
export interface SmokeResult {
  script: string;
  ok: boolean;
  /** One line: key counts, or what failed. */
  detail: string;
}

/** Outcome of {@link runSmoke}. */
export interface SmokeReport {
  /** True only when every script ran and passed; false when skipped. */
  ok: boolean;
  /** Why nothing ran (k6 missing), when it did not. */
  skipped?: string;
  results: SmokeResult[];
  /** Temp dir with certificates, k6 logs, summaries and gate logs, when kept. */
  keptDir?: string;
}

/** Options of {@link runSmoke}. */
export interface SmokeOptions {
  /** Seconds each script runs (default 4). */
  durationS?: number;
  /** Challenge store of the gates: redis when redis-server is on PATH (default), or memory. */
  store?: 'auto' | 'memory' | 'redis';
  /** Scripts to run (file names in load/k6), default all. */
  scripts?: string[];
  /** Keep the temp dir even when everything passed. */
  keep?: boolean;
  /** k6 binary (default: `k6` from PATH). */
  k6?: string;
  /** Where progress lines go (default stdout). */
  log?: (line: string) => void;
}

const K6_DIR = join(dirname(fileURLToPath(import.meta.url)), 'k6');

/** All scripts, in the order they run. */
export const SCRIPTS = ['challenge-flow.js', 'gated-rps.js', 'replay-storm.js', 'abuse.js'] as const;

/** The k6 binary on PATH, or undefined. */
export function findK6(bin = 'k6'): string | undefined {
  const r = spawnSync(bin, ['version'], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? bin : undefined;
}

/** The line printed when the smoke is skipped. */
export const SKIP_LINE = 'load:smoke: skipped: k6 not on PATH (install it with ../shared/tools/k6/install)';

// ---------------------------------------------------------------------------------------------
// The environment: PKI, store, upstream, gates.

interface AgentFiles {
  cert: string;
  key: string;
}

/** Everything the scripts run against. */
export interface LoadEnv {
  dir: string;
  caFile: string;
  agents: Record<'flow' | 'gated' | 'replay' | 'flood' | 'prover' | 'good', AgentFiles>;
  /** Rate limits off. */
  gateUrl: string;
  /** Second instance on the same store (redis only), else undefined. */
  gate2Url?: string;
  /** Rate limits on, small per-identity limits. */
  abuseGateUrl: string;
  store: 'memory' | 'redis';
  /** Limits of the abuse gate, for the report. */
  abuseLimits: Record<string, string>;
  close(): Promise<void>;
}

async function writePem(dir: string, name: string, kc: KeyAndCert): Promise<AgentFiles> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await writeFile(cert, kc.certPem, { mode: 0o644 });
  await writeFile(key, kc.keyPem, { mode: 0o600 });
  return { cert, key };
}

/** An upstream that answers every request with a small JSON body and keeps nothing. */
async function startUpstream(): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, agent_id: req.headers['x-agent-id'] ?? null }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return {
    url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Builds and starts one gate logging to `logFile`; `close` stops it and closes the log. */
async function startOneGate(env: Record<string, string>, logFile: string): Promise<{ port: number; close(): Promise<void> }> {
  const { config, violations } = loadConfig(env);
  if (!config || violations.length > 0) throw new Error(violations.map(formatViolation).join('\n'));
  const log = pino.destination({ dest: logFile, sync: false, append: true });
  let gate: Gate | undefined;
  const close = async () => {
    await gate?.close();
    log.end();
  };
  try {
    gate = await buildGate(config, { warn: () => {}, logStream: log as unknown as NodeJS.WritableStream });
    const { publicPort } = await gate.listen();
    return { port: publicPort, close };
  } catch (err) {
    await close();
    throw err;
  }
}

function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { timeout: 10_000 }).status === 0;
}

/** Starts the PKI, store, upstream and gates in `dir`. */
export async function startLoadEnv(dir: string, opts: { store?: SmokeOptions['store'] } = {}): Promise<LoadEnv> {
  const cleanups: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  };
  try {
    const ca = await createCa({ commonName: 'agent-gate load-smoke CA' });
    const server = await issueServerCert(ca);
    const caFile = join(dir, 'ca.crt');
    await writeFile(caFile, ca.certPem);
    const srv = await writePem(dir, 'server', server);
    const agents = {} as LoadEnv['agents'];
    for (const name of ['flow', 'gated', 'replay', 'flood', 'prover', 'good'] as const) {
      agents[name] = await writePem(dir, `agent-${name}`, await issueAgentCert(ca, `load-${name}`, { alg: 'ec-p256' }));
    }

    const wantRedis = opts.store === 'redis' || (opts.store !== 'memory' && hasRedisServer());
    let redis: RedisServer | undefined;
    if (wantRedis) {
      redis = await startRedis();
      cleanups.push(() => redis!.stop());
    }
    const upstream = await startUpstream();
    cleanups.push(() => upstream.close());

    const base: Record<string, string> = {
      GATE_ENV: 'dev',
      GATE_LISTEN: '127.0.0.1:0',
      GATE_ADMIN_LISTEN: '127.0.0.1:0',
      GATE_TLS_CERT: srv.cert,
      GATE_TLS_KEY: srv.key,
      GATE_CLIENT_CA: caFile,
      GATE_UPSTREAM_URL: upstream.url,
      GATE_LOG_LEVEL: 'warn',
      GATE_POW: 'off',
      // One signing key for every instance, so a token from one verifies on the others.
      GATE_SIGNING_JWK: JSON.stringify(await generateSigningJwk()),
      ...(redis ? { GATE_STORE: 'redis', GATE_REDIS_URL: redis.url } : { GATE_STORE: 'memory' }),
    };
    const start = async (name: string, extra: Record<string, string>) => {
      const g = await startOneGate({ ...base, ...extra }, join(dir, `gate-${name}.log`));
      cleanups.push(() => g.close());
      return g.port;
    };
    const gatePort = await start('a', { GATE_RATE_LIMITS: 'off' });
    const gate2Port = redis ? await start('a2', { GATE_RATE_LIMITS: 'off' }) : undefined;
    // All k6 traffic comes from 127.0.0.1: the per-address limit is generous so the flood trips
    // its own certificate's limits, and the well-behaved agent (another certificate) keeps going.
    const abuseLimits = {
      GATE_RATE_CHALLENGE_IP: '100000/10',
      GATE_RATE_CHALLENGE_IDENTITY: '20/10',
      GATE_RATE_TOKEN_IDENTITY: '20/10',
      GATE_RATE_PROXY_IDENTITY: '20/1',
      GATE_RATE_FAILED_PROOFS: '5/60',
    };
    const abusePort = await start('b', { GATE_RATE_LIMITS: 'on', ...abuseLimits });
    return {
      dir,
      caFile,
      agents,
      gateUrl: `https://127.0.0.1:${gatePort}`,
      gate2Url: gate2Port ? `https://127.0.0.1:${gate2Port}` : undefined,
      abuseGateUrl: `https://127.0.0.1:${abusePort}`,
      store: redis ? 'redis' : 'memory',
      abuseLimits,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Running k6.

/** One k6 process of the smoke: a script with its `-e` variables. */
export interface SmokeRun {
  script: string;
  /** Distinguishes the processes of one script (abuse.js runs two side by side). */
  label: string;
  vars: Record<string, string>;
}

/** The k6 processes of each script in the smoke; the runs of one script go at the same time. */
export function smokeRuns(env: LoadEnv, script: string, durationS: number): SmokeRun[] {
  const common = { K6_PERF_THRESHOLDS: 'off', K6_RUN_DURATION: `${durationS}s`, K6_CA_CERT: env.caFile };
  const agent = (a: AgentFiles) => ({ K6_AGENT_CERT: a.cert, K6_AGENT_KEY: a.key });
  const run = (vars: Record<string, string>, label = script.replace(/\.js$/, '')): SmokeRun => ({ script, label, vars: { ...common, ...vars } });
  switch (script) {
    case 'challenge-flow.js':
      return [run({ ...agent(env.agents.flow), K6_GATE_URL: env.gateUrl, K6_RATE: '10', K6_CALLS: '3', K6_FLOW_OK_MIN: '1', K6_ON_TIME_MIN: '1' })];
    case 'gated-rps.js':
      return [run({ ...agent(env.agents.gated), K6_GATE_URL: env.gateUrl, K6_RATE: '50', K6_GATED_OK_MIN: '1' })];
    case 'replay-storm.js':
      return [
        run({
          ...agent(env.agents.replay),
          K6_GATE_URL: env.gateUrl,
          K6_REPLAY_URLS: [env.gateUrl, env.gate2Url].filter(Boolean).join(','),
          K6_RATE: '3',
          K6_REPLAYS: '12',
        }),
      ];
    case 'abuse.js': {
      // k6 presents one client certificate per process: the challenge and gated floods, the
      // bad-proof flood (its own certificate, so its cooldown does not hide the challenge limit)
      // and the well-behaved agent are three processes. The floods run a second longer and the
      // good agent starts a second late, so it runs inside them.
      const flood = { K6_ABUSE_ROLE: 'flood', K6_GATE_URL: env.abuseGateUrl, K6_RUN_DURATION: `${durationS + 1}s`, K6_FLOOD_GRACE: '1s' };
      return [
        run({ ...agent(env.agents.flood), ...flood, K6_FLOODS: 'challenge,gated', K6_FLOOD_RATE: '30', K6_FLOOD_GATED_RATE: '60' }, 'abuse-flood'),
        run({ ...agent(env.agents.prover), ...flood, K6_FLOODS: 'proofs', K6_FLOOD_PROOF_RATE: '5' }, 'abuse-flood-proofs'),
        run({ ...agent(env.agents.good), K6_ABUSE_ROLE: 'good', K6_GATE_URL: env.abuseGateUrl, K6_GOOD_START: '1s', K6_GOOD_RATE: '2', K6_GOOD_OK_MIN: '1' }, 'abuse-good'),
      ];
    }
    default:
      throw new Error(`unknown script ${script} (one of ${SCRIPTS.join(', ')})`);
  }
}

/** The process environment of k6: no inherited K6_* (those would change k6's own options). */
function k6ProcessEnv(caFile: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('K6_')) env[k] = v;
  // k6 has no CA option: Go reads the trusted roots from SSL_CERT_FILE.
  return { ...env, SSL_CERT_FILE: caFile, K6_NO_USAGE_REPORT: 'true' };
}

interface SummaryMetric {
  count?: number;
  passes?: number;
  fails?: number;
  /** In --summary-export a threshold maps to true when it failed. */
  thresholds?: Record<string, boolean>;
  [stat: string]: unknown;
}
/** The `--summary-export` JSON of one k6 run. */
export interface Summary {
  metrics: Record<string, SummaryMetric>;
}

/** Thresholds that failed, as `metric: expr`. */
export function failedThresholds(summary: Summary): string[] {
  const out: string[] = [];
  for (const [name, m] of Object.entries(summary.metrics)) {
    for (const [expr, failed] of Object.entries(m.thresholds ?? {})) if (failed) out.push(`${name}: ${expr}`);
  }
  return out;
}

/** Samples of a metric: a counter's count, a rate's passes + fails. */
function samples(s: Summary, name: string): number {
  const m = s.metrics[name];
  if (!m) return 0;
  if (typeof m.count === 'number') return m.count;
  return (m.passes ?? 0) + (m.fails ?? 0);
}
function passes(s: Summary, name: string): number {
  return s.metrics[name]?.passes ?? 0;
}

/** One line of key counts per run, from its summary. */
export function describe(label: string, s: Summary): string {
  const n = (name: string) => samples(s, name);
  const ratio = (name: string) => `${passes(s, name)}/${n(name)}`;
  const errs = `${n('server_errors')} x 5xx`;
  switch (label) {
    case 'challenge-flow':
      return `${ratio('flow_ok')} flows ok, ${ratio('proof_on_time')} proofs on time, ${n('http_reqs')} requests, ${errs}`;
    case 'gated-rps':
      return `${ratio('gated_ok')} gated calls ok, ${n('token_refreshes')} token fetches, ${errs}`;
    case 'replay-storm':
      return `${ratio('one_token_per_challenge')} challenges with exactly one token, ${n('replays_refused')} x 409, ${n('extra_tokens')} extra tokens, ${n('unexpected_status')} unexpected, ${errs}`;
    case 'abuse-flood':
    case 'abuse-flood-proofs': {
      const floods = Object.keys(s.metrics)
        .map((k) => /^flood_refused\{scenario:flood_(.+)\}$/.exec(k))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => `${m[1]} ${ratio(m[0])}`);
      const limiters = Object.keys(s.metrics)
        .map((k) => /^flood_limited\{limiter:(.+)\}$/.exec(k))
        .filter((m): m is RegExpExecArray => m !== null && n(m[0]) > 0)
        .map((m) => `${m[1]} ${n(m[0])}`);
      return `flood refused after warm-up: ${floods.join(', ')} (429s by limiter: ${limiters.join(', ') || 'none'}), ${n('flood_unexpected')} unexpected, ${errs}`;
    }
    case 'abuse-good':
      return `good agent ${ratio('good_flow_ok')} flows ok, ${n('good_refused')} refused, ${errs}`;
    default:
      return `${n('http_reqs')} requests`;
  }
}

/**
 * The metrics a run must have sampled for its thresholds to mean anything: k6 passes a rate
 * threshold on a metric that got no samples at all.
 */
const MUST_SAMPLE: Record<string, string[]> = {
  'challenge-flow': ['flow_ok', 'proof_on_time'],
  'gated-rps': ['gated_ok'],
  'replay-storm': ['one_token_per_challenge', 'replays_refused'],
  'abuse-flood': ['flood_refused{scenario:flood_challenge}', 'flood_refused{scenario:flood_gated}', 'flood_limited{limiter:challenge_identity}', 'flood_limited{limiter:proxy_identity}'],
  'abuse-flood-proofs': ['flood_refused{scenario:flood_proofs}', 'flood_limited{limiter:failed_proof}'],
  'abuse-good': ['good_flow_ok'],
};

/** Runs one k6 process; resolves to whether it passed and a line about it. */
export async function runK6(k6: string, run: SmokeRun, dir: string, caFile: string, timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  const summaryFile = join(dir, `${run.label}.summary.json`);
  const logFile = join(dir, `${run.label}.k6.log`);
  // --address '': no REST API server (it would take 127.0.0.1:6565, clashing between runs).
  const args = ['run', '--quiet', '--no-usage-report', '--no-color', '--address', '', '--summary-export', summaryFile];
  for (const [k, v] of Object.entries(run.vars)) args.push('-e', `${k}=${v}`);
  args.push(join(K6_DIR, run.script));
  const out: Buffer[] = [];
  const code = await new Promise<number | string>((resolve) => {
    const child: ChildProcess = spawn(k6, args, { env: k6ProcessEnv(caFile), stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => out.push(d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(`timeout after ${timeoutMs} ms`);
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve(`spawn error: ${err.message}`);
    });
    child.on('exit', (c, sig) => {
      clearTimeout(timer);
      resolve(c ?? `signal ${sig}`);
    });
  });
  const log = Buffer.concat(out).toString('utf8');
  await writeFile(logFile, log);
  let summary: Summary | undefined;
  try {
    summary = JSON.parse(await readFile(summaryFile, 'utf8')) as Summary;
  } catch {
    summary = undefined;
  }
  if (!summary) {
    const last = log.trim().split('\n').slice(-3).join(' | ');
    return { ok: false, detail: `${run.label}: k6 exit ${code}, no summary (${last || 'no output'}; log ${logFile})` };
  }
  const failed = failedThresholds(summary);
  const unsampled = (MUST_SAMPLE[run.label] ?? []).filter((m) => samples(summary, m) === 0);
  const ok = code === 0 && failed.length === 0 && unsampled.length === 0;
  let detail = describe(run.label, summary);
  if (!ok) {
    const why = [code === 99 ? 'thresholds failed' : `k6 exit ${code}`, ...failed, ...(unsampled.length ? [`no samples for ${unsampled.join(', ')}`] : [])];
    detail += ` -- ${why.join('; ')} (log ${logFile})`;
  }
  return { ok, detail };
}

/** Runs the smoke: environment up, every script, environment down. */
export async function runSmoke(opts: SmokeOptions = {}): Promise<SmokeReport> {
  const log = opts.log ?? ((line: string) => process.stdout.write(line + '\n'));
  const k6 = findK6(opts.k6);
  if (!k6) {
    log(SKIP_LINE);
    return { ok: false, skipped: 'k6 not on PATH', results: [] };
  }
  const durationS = opts.durationS ?? 4;
  const scripts = opts.scripts ?? [...SCRIPTS];
  const dir = await mkdtemp(join(tmpdir(), 'agent-gate-load-smoke-'));
  const results: SmokeResult[] = [];
  let env: LoadEnv | undefined;
  try {
    env = await startLoadEnv(dir, { store: opts.store });
    log(`load:smoke: gate ${env.gateUrl}${env.gate2Url ? ` + ${env.gate2Url}` : ''} (${env.store} store, rate limits off), abuse gate ${env.abuseGateUrl} (rate limits on), ${durationS} s per script`);
    for (const script of scripts) {
      const runs = smokeRuns(env, script, durationS);
      const outcomes = await Promise.all(runs.map((r) => runK6(k6, r, dir, env!.caFile, (durationS + 45) * 1000)));
      const detail = outcomes.map((o, i) => (runs.length > 1 ? `[${runs[i]!.label}] ${o.detail}` : o.detail)).join('; ');
      const r = { script, ok: outcomes.every((o) => o.ok), detail };
      results.push(r);
      log(`load:smoke: ${r.ok ? 'ok  ' : 'FAIL'} ${script}: ${r.detail}`);
    }
  } catch (err) {
    results.push({ script: '(environment)', ok: false, detail: (err as Error).message });
    log(`load:smoke: FAIL environment: ${(err as Error).message}`);
  } finally {
    await env?.close();
  }
  const ok = results.length > 0 && results.every((r) => r.ok);
  const keep = opts.keep || !ok;
  if (keep) log(`load:smoke: logs, summaries and certificates kept in ${dir}`);
  else await rm(dir, { recursive: true, force: true });
  return { ok, results, ...(keep ? { keptDir: dir } : {}) };
}

// ---------------------------------------------------------------------------------------------
// CLI.

/** `--serve`: the environment only, with the k6 command lines to use it, until Ctrl-C. */
async function serve(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'agent-gate-load-env-'));
  const env = await startLoadEnv(dir);
  process.stdout.write(`load env in ${dir} (${env.store} store); Ctrl-C stops it. Run from the repo root:\n\n`);
  for (const script of SCRIPTS) {
    for (const run of smokeRuns(env, script, 30)) {
      const { K6_PERF_THRESHOLDS: _perf, ...vars } = run.vars;
      const e = Object.entries(vars)
        .map(([k, v]) => `-e ${k}=${v}`)
        .join(' ');
      process.stdout.write(`SSL_CERT_FILE=${env.caFile} k6 run ${e} load/k6/${script}\n\n`);
    }
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await env.close();
  await rm(dir, { recursive: true, force: true });
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--serve')) {
    await serve();
    return 0;
  }
  const value = (flag: string) => argv.find((a) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);
  const only = value('only');
  const store = value('store');
  if (store !== undefined && store !== 'memory' && store !== 'redis' && store !== 'auto') throw new Error(`--store must be memory, redis or auto, got ${store}`);
  const report = await runSmoke({ keep: argv.includes('--keep'), scripts: only ? only.split(',') : undefined, store });
  if (report.skipped) return argv.includes('--require-k6') ? 1 : 0;
  const failed = report.results.filter((r) => !r.ok).length;
  process.stdout.write(`load:smoke: ${report.results.length - failed} passed, ${failed} failed\n`);
  return report.ok ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`load:smoke: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
