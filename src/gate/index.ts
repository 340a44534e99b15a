/**
 * The gate's decision path: the tables of pipeline.ts built into hooks for one gate.
 * @module
 */
import type { onRequestHookHandler } from 'fastify';
import { sendRefusal, toRefusal, type RefusalSinks } from '../http/errors.js';
import { buildChecks, buildTable, type BuiltTable } from './build.js';
import type { Check } from './context.js';
import type { GateDeps } from './deps.js';
import { PIPELINE, type Endpoint, type Mode } from './pipeline.js';
import { checksHook, type Refuse } from './runner.js';

export { PIPELINE, modeOf, rowsOf, type Endpoint, type Mode, type Table, type ModeTables } from './pipeline.js';
export { CHECKS, type CheckName } from './checks/index.js';
export { buildChecks, buildTable, type BuiltTable } from './build.js';
export { runChecks, runChecksAsync, checksHook, type Refuse } from './runner.js';
export type { Check, TokenExchange } from './context.js';
export type { GateDeps, CheckFactory, LimitRow, LimitRowFactory } from './deps.js';
export { installEdge, installMinimalEdge } from './edge.js';
export { challengeRoutes, type ChallengeRoutesOptions } from './routes/endpoints.js';
export { registerInfoRoutes } from './routes/info.js';

/** One gate's built decision path. */
export interface GatePipelines {
  mode: Mode;
  /** The edge rows (steps 1-2). */
  edge: Check[];
  /** Each endpoint the mode serves, built. */
  tables: Partial<Record<Endpoint, BuiltTable>>;
  /** Answers anything a check threw: its GateError, or 500 `internal_error`. */
  refuse: Refuse;
  /** A table's `headers` phase as an onRequest hook. */
  hook(table: BuiltTable): onRequestHookHandler;
}

/** Builds every table of `mode` from `deps`, once, at start-up. */
export function buildPipelines(mode: Mode, deps: GateDeps, sinks: RefusalSinks): GatePipelines {
  const refuse: Refuse = (request, reply, err) => void sendRefusal(request, reply, toRefusal(err), sinks);
  const tables: GatePipelines['tables'] = {};
  for (const endpoint of Object.keys(PIPELINE[mode].endpoints) as Endpoint[]) tables[endpoint] = buildTable(mode, endpoint, deps);
  return { mode, edge: buildChecks(PIPELINE[mode].edge, deps), tables, refuse, hook: (table) => checksHook(table.headers, refuse) };
}
