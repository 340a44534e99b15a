/**
 * Load shedding (step 1 of section 4): a cap on requests in flight and event-loop-delay
 * protection, answered as 503 `overloaded` before any other work. Hand-written rather than
 * @fastify/under-pressure because the health endpoints must stay exempt and the refusal must
 * carry the contract's code and the `load_shed_total{reason}` label.
 * @module
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { GateError } from '../errors.js';
import type { GateMetrics } from '../metrics/index.js';

/** Options of {@link LoadShedder}. */
export interface LoadShedderOptions {
  maxInflight: number;
  /** Mean event-loop delay (ms) over the last sample that turns shedding on; 0 disables. */
  maxEventLoopDelayMs: number;
  metrics: GateMetrics;
  /** How often the event-loop delay is sampled. */
  sampleMs?: number;
}

/** Counts requests in flight and decides when to shed. */
export class LoadShedder {
  inflight = 0;
  private lagging = false;
  private readonly histogram: IntervalHistogram | undefined;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: LoadShedderOptions) {
    if (opts.maxEventLoopDelayMs > 0) {
      const h = monitorEventLoopDelay({ resolution: 10 });
      h.enable();
      this.histogram = h;
      this.timer = setInterval(() => {
        this.lagging = h.mean / 1e6 > opts.maxEventLoopDelayMs;
        h.reset();
      }, opts.sampleMs ?? 500);
      this.timer.unref();
    }
  }

  /** Fraction of the in-flight cap in use, for adaptive proof-of-work. */
  get load(): number {
    return this.inflight / this.opts.maxInflight;
  }

  /** The refusal for a new request (already counted in `inflight`), or undefined when it may proceed. */
  refusal(): GateError | undefined {
    if (this.inflight > this.opts.maxInflight) {
      this.opts.metrics.loadShed.inc({ reason: 'concurrency' });
      return new GateError('overloaded', { detail: `${this.inflight} requests in flight`, headers: { 'retry-after': '1' } });
    }
    if (this.lagging) {
      this.opts.metrics.loadShed.inc({ reason: 'event_loop' });
      return new GateError('overloaded', { detail: 'event loop delayed', headers: { 'retry-after': '1' } });
    }
    return undefined;
  }

  /** Stops the sampler. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.histogram?.disable();
  }
}

/** Proof-of-work difficulty for `GATE_POW` (section 3, at most 24 bits). */
export function powDifficulty(mode: 'off' | 'on' | 'adaptive', load: number): number {
  if (mode === 'off') return 0;
  if (mode === 'on') return POW_ON_BITS;
  // Adaptive: free below half load, then 8 bits rising to 20 at full load.
  if (load < 0.5) return 0;
  return Math.min(20, Math.round(8 + ((Math.min(load, 1) - 0.5) / 0.5) * 12));
}

/** Difficulty with GATE_POW=on: about 65k hashes, tens of milliseconds for an agent. */
export const POW_ON_BITS = 16;
