/**
 * Paired A/B rounds of closed-loop flow jobs for the small bench scripts (tickets-ab.ts,
 * resume-ab.ts): two variants measured back to back in each round, the order alternating, so
 * the machine's drifting speed falls on both; the paired ratio is the figure to quote.
 * @module
 */
import type { FlowJob, FlowResult } from './jobs.js';
import type { LoadGen } from './setup.js';
import { median } from './stats.js';

/** One side of the comparison: its label, its job, and the processes whose CPU is its cost. */
export interface FlowVariant {
  label: string;
  job: FlowJob;
  pids: number[];
}

/**
 * Runs `runs` rounds of `a` and `b` on `lg`, printing a line per measurement (plus what `extra`
 * adds), then the medians of CPU per flow and flows/s and the median of the paired ratios b / a.
 */
export async function pairedFlowRounds(lg: LoadGen, runs: number, a: FlowVariant, b: FlowVariant, extra: (r: FlowResult) => string = () => ''): Promise<void> {
  const cpu = new Map<FlowVariant, number[]>([
    [a, []],
    [b, []],
  ]);
  const rates = new Map<FlowVariant, number[]>([
    [a, []],
    [b, []],
  ]);
  const width = Math.max(a.label.length, b.label.length);
  for (let i = 0; i < runs; i++) {
    for (const v of i % 2 === 0 ? [a, b] : [b, a]) {
      const r = await lg.run(v.job, { measured: v.pids });
      if (r.result.kind !== 'flow') throw new Error('unexpected result');
      const us = ((r.cpuSeconds.measured ?? 0) * 1e6) / (r.result.rate * r.windowS);
      cpu.get(v)!.push(us);
      rates.get(v)!.push(r.result.rate);
      console.log(`round ${i + 1} ${v.label.padEnd(width)}: ${r.result.rate.toFixed(0)} flows/s, gate ${us.toFixed(0)} µs/flow, errors ${r.result.errors}${extra(r.result)}`);
    }
  }
  const ratios = cpu.get(b)!.map((v, i) => v / cpu.get(a)![i]!);
  const summary = (v: FlowVariant) => `${v.label} ${median(cpu.get(v)!).toFixed(0)} µs (${median(rates.get(v)!).toFixed(0)}/s)`;
  console.log(`gate CPU per flow, median of ${runs}: ${summary(a)}, ${summary(b)}; ${b.label} / ${a.label} paired ${median(ratios).toFixed(3)}`);
}
