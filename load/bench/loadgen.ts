/**
 * The load generator: a child process of its own (so it never shares the gate's event loop),
 * driven over IPC by `load/bench.ts`, running one job at a time with undici.
 *
 * - keep-alive: a `Pool` of N mTLS connections, closed loop (N requests in flight) or open
 *   loop (constant arrival rate, latency measured from the scheduled time so a stalled server
 *   cannot hide its queue: no coordinated omission);
 * - flow: every iteration a NEW undici `Client` (new TCP + full TLS handshake, no session
 *   cache) that does challenge → ES256 proof (node:crypto, ieee-p1363) → token and closes;
 *   or, for the baseline, one GET to a Node mTLS server that answers at once; or (keepAlive)
 *   each agent's flows one after another on its own kept-alive connection;
 * - open flow: full flows started at a constant rate, each judged against a deadline.
 *
 * Every run has a warm-up and a measurement window; requests completing in the window are
 * counted and keep every latency sample. `mark` messages bracket the window so the
 * orchestrator can read the servers' CPU time over exactly that span.
 * @module
 */
import { createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createSecureContext, type SecureContext } from 'node:tls';
import { Client, Pool } from 'undici';
import { sessionKeepingConnector } from '../../src/client/connector.js';
import type { ClientTls, FlowJob, FlowResult, FromLoadgen, Job, JobResult, KeepAliveJob, KeepAliveResult, OpenFlowJob, OpenFlowResult, Outcomes, ToLoadgen } from './jobs.js';
import { Samples } from './stats.js';

let tls: ClientTls | undefined;
let agentKey: KeyObject | undefined;

function send(msg: FromLoadgen): void {
  process.send?.(msg);
}

const PROOF_HEADER = Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'agent-gate-proof+jwt' })).toString('base64url');

/** Compact JWS proof (PROTOCOL.md section 4) signed with the agent's P-256 key. */
function proof(ch: { challenge_id: string; nonce: string; aud: string }): string {
  if (!agentKey) throw new Error('not initialised');
  const payload = Buffer.from(JSON.stringify({ cid: ch.challenge_id, nonce: ch.nonce, aud: ch.aud, iat: Math.floor(Date.now() / 1000) })).toString('base64url');
  const input = `${PROOF_HEADER}.${payload}`;
  const sig = sign('sha256', Buffer.from(input), { key: agentKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

/**
 * One TLS context for every connection. Given `ca`, `cert` and `key`, `tls.connect` builds a new
 * context per connection, parsing the PEMs again: ~900 µs of CPU each with OpenSSL 3.0 here, a
 * third of the load generator's cost per new-connection flow. With it, every flow row was bound by
 * the load generator, not the servers it compares (before 2026-12-08).
 */
let context: SecureContext | undefined;
function connectOptions(noSessionCache: boolean) {
  if (!tls) throw new Error('not initialised');
  context ??= createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key });
  return {
    secureContext: context,
    servername: tls.servername,
    rejectUnauthorized: true,
    ...(noSessionCache ? { maxCachedSessions: 0 } : {}),
  };
}

function outcomes(): Outcomes {
  return { statuses: {}, examples: [] };
}

function count(o: Outcomes, key: string, example?: string): void {
  o.statuses[key] = (o.statuses[key] ?? 0) + 1;
  if (example && o.examples.length < 5) o.examples.push(example);
}

function errKey(err: unknown): string {
  const e = err as { code?: string; name?: string };
  return `error:${e.code ?? e.name ?? 'unknown'}`;
}

/**
 * Sends the start/end marks at t0 and t1 (performance.now() times). The returned function
 * sends, at once and in order, any mark whose timer has not fired yet (a loop may finish a
 * hair before its end timer runs): every job sends both marks exactly once.
 */
function scheduleMarks(id: number, t0: number, t1: number): () => void {
  const pending: Array<'start' | 'end'> = ['start', 'end'];
  const fire = (phase: 'start' | 'end') => {
    while (pending.length > 0) {
      const next = pending.shift()!;
      send({ type: 'mark', id, phase: next });
      if (next === phase) return;
    }
  };
  const a = setTimeout(() => fire('start'), Math.max(0, t0 - performance.now()));
  const b = setTimeout(() => fire('end'), Math.max(0, t1 - performance.now()));
  return () => {
    clearTimeout(a);
    clearTimeout(b);
    fire('end');
  };
}

/**
 * Constant-rate arrivals from `start` until `end`: arrival i is due at start + i/rate; every
 * tick launches all arrivals that are due (so a late tick catches up instead of dropping).
 */
function openLoop(rate: number, start: number, end: number, launch: (scheduledAt: number) => void): Promise<void> {
  const interval = 1000 / rate;
  let i = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      for (;;) {
        const due = start + i * interval;
        if (due >= end) {
          // Resolve at `end`, not at the last arrival, so the window is always complete.
          setTimeout(resolve, Math.max(0, end - now));
          return;
        }
        if (due > now) break;
        launch(due);
        i++;
      }
      const wait = start + i * interval - performance.now();
      setTimeout(tick, Math.max(0, Math.floor(wait)));
    };
    tick();
  });
}

/** Waits until `pending()` is 0 or `timeoutMs` passes. */
async function settle(pending: () => number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (pending() > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

interface FlowOutcome {
  /** `ok`, an HTTP status that was not the expected one, or `error:<code>`. */
  result: string;
  firstMs: number;
  tokenMs: number;
  token?: string;
  example?: string;
}

let resuming: ReturnType<typeof sessionKeepingConnector> | undefined;
/** Connections made through {@link resuming}, and how many resumed: what `resume` jobs report. */
const resumeCount = { connections: 0, resumed: 0 };

/** The SDK's connector, counting the connections that resumed a session. */
function resumingConnector(): ReturnType<typeof sessionKeepingConnector> {
  const inner = (resuming ??= sessionKeepingConnector(connectOptions(false)));
  return (options, callback) =>
    inner(options, (...args) => {
      const socket = args[1];
      if (socket && 'isSessionReused' in socket) {
        resumeCount.connections++;
        if (socket.isSessionReused()) resumeCount.resumed++;
      }
      callback(...args);
    });
}

/**
 * A one-connection client; `noSessionCache` makes every connection a full handshake, `resume`
 * resumes the newest session of any earlier one (the SDK's connector).
 */
function flowClient(origin: string, noSessionCache: boolean, resume = false): Client {
  return new Client(origin, {
    connect: resume ? resumingConnector() : connectOptions(noSessionCache),
    pipelining: 1,
    connectTimeout: 10_000,
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
    ...(noSessionCache ? {} : { keepAliveTimeout: 60_000 }),
  });
}

/**
 * One flow on a new connection. `gate`: challenge → proof → token. `tls`: one GET.
 * Resolves (never rejects) when the connection is closed.
 */
async function flowOnce(origin: string, prefix: string, mode: 'gate' | 'tls', resume = false, getPath = '/'): Promise<FlowOutcome> {
  const client = flowClient(origin, true, resume);
  try {
    return await flowOn(client, prefix, mode, getPath);
  } finally {
    await client.close().catch(() => client.destroy().catch(() => {}));
  }
}

/** One flow on `client` (a new or a kept-alive connection); resolves, never rejects. */
async function flowOn(client: Client, prefix: string, mode: 'gate' | 'tls', getPath = '/'): Promise<FlowOutcome> {
  const out: FlowOutcome = { result: 'ok', firstMs: 0, tokenMs: 0 };
  try {
    const s = performance.now();
    if (mode === 'tls') {
      const r = await client.request({ path: getPath, method: 'GET' });
      await r.body.text();
      out.firstMs = performance.now() - s;
      if (r.statusCode !== 200) out.result = String(r.statusCode);
      return out;
    }
    const ch = await client.request({ path: `${prefix}/v1/challenge`, method: 'POST' });
    const chText = await ch.body.text();
    out.firstMs = performance.now() - s;
    if (ch.statusCode !== 201) {
      out.result = String(ch.statusCode);
      out.example = `challenge ${ch.statusCode}: ${chText.slice(0, 200)}`;
      return out;
    }
    const c = JSON.parse(chText) as { challenge_id: string; nonce: string; aud: string };
    const body = JSON.stringify({ challenge_id: c.challenge_id, proof: proof(c) });
    const t = performance.now();
    const tk = await client.request({ path: `${prefix}/v1/token`, method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const tkText = await tk.body.text();
    out.tokenMs = performance.now() - t;
    if (tk.statusCode !== 200) {
      out.result = String(tk.statusCode);
      out.example = `token ${tk.statusCode}: ${tkText.slice(0, 200)}`;
      return out;
    }
    out.token = (JSON.parse(tkText) as { access_token: string }).access_token;
    return out;
  } catch (err) {
    out.result = errKey(err);
    out.example = `${out.result}: ${(err as Error).message}`;
    return out;
  }
}

async function getToken(origin: string, prefix: string): Promise<string> {
  const r = await flowOnce(origin, prefix, 'gate');
  if (!r.token) throw new Error(`could not get a token from ${origin}${prefix}: ${r.example ?? r.result}`);
  return r.token;
}

async function keepAlive(id: number, job: KeepAliveJob): Promise<KeepAliveResult> {
  const token = job.tokenPrefix !== undefined ? await getToken(job.origin, job.tokenPrefix) : undefined;
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const pool = new Pool(job.origin, {
    connections: job.connections,
    pipelining: 1,
    connect: connectOptions(false),
    keepAliveTimeout: 60_000,
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
  const samples = new Samples();
  const lag = new Samples(1024);
  const o = outcomes();
  let completed = 0;
  let errors = 0;
  let offered = 0;
  let pending = 0;
  const start = performance.now();
  const t0 = start + job.warmupMs;
  const t1 = t0 + job.durationMs;
  const finishMarks = scheduleMarks(id, t0, t1);

  // Closed loop: counted when the response completes inside the window. Open loop: counted
  // when the request was scheduled inside the window, latency from its scheduled time.
  const one = async (scheduledAt?: number) => {
    const s = scheduledAt ?? performance.now();
    const inWindow = (end: number) => (scheduledAt === undefined ? end >= t0 && end < t1 : s >= t0 && s < t1);
    try {
      const r = await pool.request({ path: job.path, method: 'GET', headers });
      const text = await r.body.text();
      const e = performance.now();
      if (!inWindow(e)) return;
      if (r.statusCode === 200) {
        completed++;
        samples.push(e - s);
      } else {
        errors++;
        count(o, String(r.statusCode), `${r.statusCode}: ${text.slice(0, 200)}`);
      }
    } catch (err) {
      if (!inWindow(performance.now())) return;
      errors++;
      count(o, errKey(err), `${errKey(err)}: ${(err as Error).message}`);
    }
  };

  try {
    if (job.rate) {
      await openLoop(job.rate, start, t1, (due) => {
        if (due >= t0) {
          offered++;
          lag.push(performance.now() - due);
        }
        pending++;
        void one(due).finally(() => pending--);
      });
      await settle(() => pending, 15_000);
    } else {
      await Promise.all(
        Array.from({ length: job.connections }, async () => {
          while (performance.now() < t1) await one();
        }),
      );
    }
  } finally {
    finishMarks();
    await pool.destroy().catch(() => {});
  }
  const seconds = job.durationMs / 1000;
  return {
    kind: 'keepalive',
    completed,
    errors,
    rps: Math.round(completed / seconds),
    latency: samples.summary(),
    ...(job.rate ? { offered, schedLagMs: lag.summary() } : {}),
    ...o,
  };
}

async function flowClosed(id: number, job: FlowJob): Promise<FlowResult> {
  const flow = new Samples();
  const first = new Samples();
  const token = new Samples();
  const o = outcomes();
  let completed = 0;
  let errors = 0;
  const start = performance.now();
  const t0 = start + job.warmupMs;
  const t1 = t0 + job.durationMs;
  const finishMarks = scheduleMarks(id, t0, t1);
  resumeCount.connections = 0;
  resumeCount.resumed = 0;
  // keepAlive: one connection per agent for the whole run (undici reconnects it if the server closes it).
  const clients = job.keepAlive ? Array.from({ length: job.concurrency }, () => flowClient(job.origin, false)) : [];
  try {
    await Promise.all(
      Array.from({ length: job.concurrency }, async (_, agent) => {
        const client = clients[agent];
        while (performance.now() < t1) {
          const s = performance.now();
          const r = client ? await flowOn(client, job.prefix, job.mode, job.getPath) : await flowOnce(job.origin, job.prefix, job.mode, job.resume, job.getPath);
          const e = performance.now();
          if (e < t0 || e >= t1) continue;
          if (r.result === 'ok') {
            completed++;
            flow.push(e - s);
            first.push(r.firstMs);
            if (job.mode === 'gate') token.push(r.tokenMs);
          } else {
            errors++;
            count(o, r.result, r.example);
          }
        }
      }),
    );
  } finally {
    finishMarks();
    await Promise.all(clients.map((c) => c.destroy().catch(() => {})));
  }
  return {
    kind: 'flow',
    completed,
    errors,
    rate: Math.round((completed / (job.durationMs / 1000)) * 10) / 10,
    flow: flow.summary(),
    first: first.summary(),
    token: token.summary(),
    ...(job.resume ? { tls: { ...resumeCount } } : {}),
    ...o,
  };
}

async function flowOpen(id: number, job: OpenFlowJob): Promise<OpenFlowResult> {
  const flow = new Samples();
  const token = new Samples();
  const lag = new Samples();
  const o = outcomes();
  let scheduled = 0;
  let ok = 0;
  let onTime = 0;
  let expired = 0;
  let failed = 0;
  let dropped = 0;
  let pending = 0;
  let measuredPending = 0;
  const start = performance.now();
  const t0 = start + job.warmupMs;
  const t1 = t0 + job.durationMs;
  const finishMarks = scheduleMarks(id, t0, t1);
  try {
    await openLoop(job.rate, start, t1, (due) => {
      const measured = due >= t0;
      if (measured) scheduled++;
      if (pending >= job.maxOutstanding) {
        if (measured) {
          dropped++;
          failed++;
          count(o, 'dropped');
        }
        return;
      }
      pending++;
      if (measured) {
        measuredPending++;
        lag.push(performance.now() - due);
      }
      void flowOnce(job.origin, job.prefix, 'gate').then((r) => {
        pending--;
        if (!measured) return;
        measuredPending--;
        const e = performance.now();
        if (r.result === 'ok') {
          ok++;
          flow.push(e - due);
          token.push(r.tokenMs);
          if (e - due <= job.deadlineMs) onTime++;
        } else if (r.result === '408') {
          expired++;
          count(o, r.result, r.example);
        } else {
          failed++;
          count(o, r.result, r.example);
        }
      });
    });
    await settle(() => measuredPending, job.deadlineMs + 10_000);
  } finally {
    finishMarks();
  }
  // Flows still running after the grace period count as failed.
  failed += measuredPending;
  if (measuredPending > 0) count(o, 'unfinished');
  return {
    kind: 'flow-open',
    targetRate: job.rate,
    scheduled,
    ok,
    onTime,
    expired,
    failed,
    dropped,
    achievedRate: Math.round((ok / (job.durationMs / 1000)) * 10) / 10,
    flow: flow.summary(),
    token: token.summary(),
    schedLagMs: lag.summary(),
    ...o,
  };
}

async function run(id: number, job: Job): Promise<JobResult> {
  switch (job.kind) {
    case 'keepalive':
      return keepAlive(id, job);
    case 'flow':
      return flowClosed(id, job);
    case 'flow-open':
      return flowOpen(id, job);
  }
}

process.on('message', (raw) => {
  const msg = raw as ToLoadgen;
  if (msg.type === 'init') {
    tls = msg.tls;
    context = undefined;
    agentKey = createPrivateKey(msg.tls.key);
    send({ type: 'ready' });
    return;
  }
  run(msg.id, msg.job).then(
    (result) => send({ type: 'result', id: msg.id, result }),
    (err: unknown) => send({ type: 'error', id: msg.id, message: (err as Error)?.stack ?? String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
