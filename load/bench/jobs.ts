/**
 * Messages between the orchestrator (`load/bench.ts`) and the load-generator child
 * (`load/bench/loadgen.ts`).
 * @module
 */
import type { LatencySummary } from './stats.js';

/** Client TLS material: the agent's certificate and key, the CA that issued the servers'. */
export interface ClientTls {
  cert: string;
  key: string;
  ca: string;
  servername: string;
}

/** Keep-alive requests on a fixed pool of connections; closed loop unless `rate` is set. */
export interface KeepAliveJob {
  kind: 'keepalive';
  origin: string;
  path: string;
  connections: number;
  warmupMs: number;
  durationMs: number;
  /** Get a token first through this gate prefix (same origin) and send it as Bearer. */
  tokenPrefix?: string;
  /** Open loop: requests per second (constant arrival rate); closed loop when absent. */
  rate?: number;
}

/**
 * New mTLS connection per iteration, closed loop with `concurrency` in flight:
 * `gate` = challenge → ES256 proof → token; `tls` = one GET to a server that answers at once.
 * With `keepAlive`, each of the `concurrency` agents opens one connection and runs every one of
 * its flows on it (the flow's own cost, without a handshake per flow).
 */
export interface FlowJob {
  kind: 'flow';
  mode: 'gate' | 'tls';
  origin: string;
  prefix: string;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  /** One kept-alive connection per agent, reused for all its flows. */
  keepAlive?: boolean;
  /** New connections resume the newest TLS session, as the SDK's do (returning agents); else each is a full handshake. */
  resume?: boolean;
  /** `tls` mode: the path of the one GET (default `/`). */
  getPath?: string;
}

/** Open loop: full flows started at a constant rate; each counted on time or late/failed. */
export interface OpenFlowJob {
  kind: 'flow-open';
  origin: string;
  prefix: string;
  rate: number;
  warmupMs: number;
  durationMs: number;
  /** A flow is on time when its token arrives within this many ms of its scheduled start. */
  deadlineMs: number;
  /** Arrivals beyond this many flows in flight are dropped (counted as failed). */
  maxOutstanding: number;
}

export type Job = KeepAliveJob | FlowJob | OpenFlowJob;

/** Error and status counts of a run. */
export interface Outcomes {
  /** Responses by status code, plus `error:<code>` for transport errors. */
  statuses: Record<string, number>;
  /** A few example failures, for the report. */
  examples: string[];
}

export interface KeepAliveResult extends Outcomes {
  kind: 'keepalive';
  completed: number;
  errors: number;
  rps: number;
  latency: LatencySummary;
  /** Open loop only: requests scheduled in the window, and the scheduler's lag. */
  offered?: number;
  schedLagMs?: LatencySummary;
}

export interface FlowResult extends Outcomes {
  kind: 'flow';
  completed: number;
  errors: number;
  /** Completed flows (or connections, in `tls` mode) per second. */
  rate: number;
  /** Whole iteration: connect + handshake + request(s). */
  flow: LatencySummary;
  /** First request including connect and handshake (the challenge in `gate` mode). */
  first: LatencySummary;
  /** `gate` mode: the token request alone (proof already signed). */
  token: LatencySummary;
  /** With `resume`: TLS connections the job made (warm-up included), and how many resumed a session. */
  tls?: { connections: number; resumed: number };
}

export interface OpenFlowResult extends Outcomes {
  kind: 'flow-open';
  targetRate: number;
  /** Flows scheduled in the measurement window. */
  scheduled: number;
  /** Token issued (200). */
  ok: number;
  /** Token issued within `deadlineMs` of the flow's scheduled start. */
  onTime: number;
  /** The gate answered 408 challenge_expired: the proof missed the challenge deadline. */
  expired: number;
  /** Any other failure (transport errors, other statuses, dropped arrivals, unfinished). */
  failed: number;
  dropped: number;
  achievedRate: number;
  /** Scheduled start → token received. */
  flow: LatencySummary;
  /** `/v1/token` request → response. */
  token: LatencySummary;
  /** Start of the flow behind its schedule (load generator saturation shows here). */
  schedLagMs: LatencySummary;
}

export type JobResult = KeepAliveResult | FlowResult | OpenFlowResult;

/** Orchestrator → load generator. */
export type ToLoadgen = { type: 'init'; tls: ClientTls } | { type: 'job'; id: number; job: Job };

/** Load generator → orchestrator: `mark` at the start and end of each measurement window. */
export type FromLoadgen =
  | { type: 'ready' }
  | { type: 'mark'; id: number; phase: 'start' | 'end' }
  | { type: 'result'; id: number; result: JobResult }
  | { type: 'error'; id: number; message: string };
