/**
 * The k6 load scripts stay runnable: `load/smoke.ts` runs each for a few seconds against gates
 * started on loopback, with the functional thresholds enforced. Needs `k6` on PATH (the test
 * setup installs it from ../shared/tools/k6 when it can); without it the test is reported as
 * skipped, with one line on stderr.
 */
import { describe, expect, it } from 'vitest';
import { findK6, runSmoke, SCRIPTS, SKIP_LINE } from '../../load/smoke.js';

const hasK6 = findK6() !== undefined;
if (!hasK6) process.stderr.write(`${SKIP_LINE}\n`);

describe('load scripts', () => {
  it.skipIf(!hasK6)(hasK6 ? 'k6 smoke: every script passes its functional thresholds' : 'k6 smoke (skipped: k6 not on PATH)', async () => {
    const lines: string[] = [];
    const report = await runSmoke({ log: (line) => lines.push(line) });
    process.stdout.write(lines.join('\n') + '\n');
    expect(report.skipped).toBeUndefined();
    expect(report.results.map((r) => r.script)).toEqual([...SCRIPTS]);
    expect(report.results.filter((r) => !r.ok), lines.join('\n')).toEqual([]);
    expect(report.ok).toBe(true);
  }, 180_000);
});
