/**
 * Each Prometheus alert links its runbook: `runbook_url` in deploy/prometheus/alerts.yml names a
 * page under docs/operations/runbooks/ that exists and is that alert's page, and every runbook
 * page belongs to an alert that still exists.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const root = resolve(__dirname, '../..');
const runbookDir = 'docs/operations/runbooks';

interface AlertRule {
  alert?: string;
  annotations?: Record<string, string>;
}
const doc = parse(readFileSync(join(root, 'deploy/prometheus/alerts.yml'), 'utf8'), { schema: 'failsafe' }) as { groups: { rules: AlertRule[] }[] };
const alerts = doc.groups.flatMap((g) => g.rules).filter((r): r is AlertRule & { alert: string } => typeof r.alert === 'string');

describe('alert runbooks', () => {
  it('there are alerts to check', () => {
    expect(alerts.length).toBeGreaterThanOrEqual(10);
  });

  it.each(alerts.map((a) => [a.alert, a] as const))('%s: runbook_url names its existing runbook page', (name, alert) => {
    const url = alert.annotations?.runbook_url;
    expect(url, `${name}: runbook_url annotation`).toBeDefined();
    expect(url).toBe(`${runbookDir}/${name}.md`);
    const page = join(root, url!);
    expect(existsSync(page), `${url} does not exist`).toBe(true);
    const text = readFileSync(page, 'utf8');
    expect(text.split('\n')[0]).toBe(`# Runbook: ${name}`);
    for (const section of ['## What fired', '## Impact', '## Diagnose', '## Fix']) expect(text, `${url}: ${section}`).toContain(`\n${section}\n`);
  });

  it('every runbook page belongs to an alert, and the index lists each', () => {
    const names = new Set(alerts.map((a) => a.alert));
    const pages = readdirSync(join(root, runbookDir)).filter((f) => f.endsWith('.md') && f !== 'README.md');
    expect(pages.filter((f) => !names.has(f.replace(/\.md$/, ''))), 'runbooks of alerts that no longer exist').toEqual([]);
    const index = readFileSync(join(root, runbookDir, 'README.md'), 'utf8');
    for (const name of names) expect(index, `index lists ${name}`).toContain(`](${name}.md)`);
  });
});
