/**
 * Turns rows of pipeline.ts into checks, once per gate at start-up (never per request).
 * @module
 */
import { CHECKS, type CheckName } from './checks/index.js';
import type { Check } from './context.js';
import type { GateDeps } from './deps.js';
import { PIPELINE, type Endpoint, type Mode } from './pipeline.js';

/** The checks of `rows` built from `deps`, skipping rows the configuration turns off. */
export function buildChecks(rows: readonly CheckName[], deps: GateDeps): Check[] {
  const out: Check[] = [];
  for (const row of rows) {
    const check = CHECKS[row](deps);
    if (check) out.push(check);
  }
  return out;
}

/** The built checks of one endpoint, by phase. */
export interface BuiltTable {
  headers: Check[];
  body: Check[];
  proof: Check[];
}

/** Builds the table of `endpoint` in `mode`, or undefined when the mode does not serve it. */
export function buildTable(mode: Mode, endpoint: Endpoint, deps: GateDeps): BuiltTable | undefined {
  const t = PIPELINE[mode].endpoints[endpoint];
  if (!t) return undefined;
  return { headers: buildChecks(t.headers, deps), body: buildChecks(t.body ?? [], deps), proof: buildChecks(t.proof ?? [], deps) };
}
