/**
 * Turns rows of pipeline.ts into checks, once per gate at start-up (never per request).
 * @module
 */
import { CHECKS, type CheckName } from './checks/index.js';
import type { Check } from './context.js';
import type { GateDeps, LimitRow } from './deps.js';
import type { GateRateLimits } from '../ratelimit/index.js';
import { PIPELINE, type Endpoint, type Mode } from './pipeline.js';

/**
 * The checks of `rows` built from `deps`, skipping rows the configuration turns off. Consecutive
 * limit rows become one check that spends their counters in one store step, in row order.
 */
export function buildChecks(rows: readonly CheckName[], deps: GateDeps): Check[] {
  const out: Check[] = [];
  let step: LimitRow[] = [];
  const endStep = () => {
    if (step.length > 0) out.push(limitStep(step, deps.limits!));
    step = [];
  };
  for (const row of rows) {
    const built = CHECKS[row](deps);
    if (!built) continue;
    if (typeof built === 'function') {
      endStep();
      out.push(built);
    } else step.push(built);
  }
  endStep();
  return out;
}

/** One check for consecutive limit rows: the first counter that refuses answers 429, the rest are not spent. */
function limitStep(rows: readonly LimitRow[], limits: GateRateLimits): Check {
  return (request) =>
    limits
      .step(rows.map((r) => r.counter(request)))
      .then((shares) => {
        for (let i = 0; i < rows.length; i++) rows[i]!.after?.(request, shares[i]!);
      });
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
