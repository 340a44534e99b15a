/**
 * The error catalog and metric names against the wire contract itself (docs/protocol.md, the
 * project's own copy), so that code and contract cannot drift apart silently.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_STATUS } from '../../src/errors.js';
import { createMetrics, LABELS } from '../../src/metrics/index.js';

const protocol = readFileSync(resolve(__dirname, '../../docs/protocol.md'), 'utf8');

describe('contract catalog', () => {
  it('every error code of section 9 has the status the contract gives it, and no others exist', () => {
    const section = protocol.slice(protocol.indexOf('## 9. Errors'), protocol.indexOf('## 10.'));
    const fromDoc = new Map<string, number[]>();
    for (const line of section.split('\n')) {
      const m = /^\| ([a-z_, ]+) \| (\d{3})(?: \(.*?\) or (\d{3}))?/.exec(line);
      if (!m) continue;
      for (const code of m[1]!.split(',').map((s) => s.trim())) fromDoc.set(code, [Number(m[2]), ...(m[3] ? [Number(m[3])] : [])]);
    }
    expect(fromDoc.size).toBeGreaterThan(20);
    expect(new Set(Object.keys(ERROR_STATUS))).toEqual(new Set(fromDoc.keys()));
    for (const [code, statuses] of fromDoc) expect(statuses, code).toContain(ERROR_STATUS[code as keyof typeof ERROR_STATUS]);
  });

  it('every metric of section 10 exists with the contract name and label set', async () => {
    const section = protocol.slice(protocol.indexOf('## 10. Metrics'), protocol.indexOf('## 11.'));
    const names = [...section.matchAll(/`([a-z_]+)(?:\{([a-z_,]+)\})?`/g)]
      .map((m) => ({ name: m[1]!, labels: m[2]?.split(',') ?? [] }))
      .filter((m) => /_(total|seconds|requests)$/.test(m.name) && !m.name.startsWith('process_'));
    expect(names.length).toBeGreaterThanOrEqual(14);
    const metrics = createMetrics({ defaultMetrics: false });
    const exposed = await metrics.registry.getMetricsAsJSON();
    for (const { name, labels } of names) {
      const m = exposed.find((e) => e.name === `agent_gate_${name}`);
      expect(m, name).toBeDefined();
      const seen = new Set(m!.values.flatMap((v) => Object.keys(v.labels)).filter((l) => l !== 'le'));
      for (const l of labels) expect(seen.has(l) || String(m!.type) === 'histogram', `${name} label ${l}`).toBe(true);
    }
  });

  it('label value sets are the ones the contract lists', () => {
    const section = protocol.slice(protocol.indexOf('## 10. Metrics'), protocol.indexOf('## 11.'));
    const listed = (metric: string) => {
      const line = section.split('\n').find((l) => l.includes('`' + metric + '{'))!;
      return line.split(':').slice(1).join(':').replace(/`/g, '').split(/[,|]/).map((s) => s.trim().split(' ').at(-1)!).filter(Boolean);
    };
    expect(listed('proofs_total')).toEqual([...LABELS.proofResult]);
    expect(listed('rate_limited_total')).toEqual([...LABELS.limiter]);
    expect(listed('forwarded_verifications_total')).toEqual([...LABELS.forwardedResult]);
    expect(listed('replays_detected_total')).toEqual([...LABELS.replayKind]);
  });
});
