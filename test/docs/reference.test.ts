/**
 * The generated reference pages (docs/reference/errors.md, metrics.md, cli.md, configuration.md)
 * against the code they are generated from: regenerated in memory and compared with the committed files, as
 * fastify tests its error docs. A change to the error catalog, the metric registry, a command or
 * the config option table without `npm run docs:gen` fails here with the command that fixes it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GEN_COMMAND, renderReference, ROOT } from '../../scripts/gen-reference.js';
import { ERROR_CODES } from '../../src/errors.js';
import { buildProgram, walkCommands } from '../../src/cli/program.js';
import { OPTION_ENTRIES } from '../../src/config/options.js';

const pages = await renderReference();

/** The first differing line, to say where a page drifted without printing the whole diff. */
function firstDifference(committed: string, generated: string): string {
  const a = committed.split('\n');
  const b = generated.split('\n');
  const i = a.findIndex((line, n) => line !== b[n]);
  const at = i === -1 ? a.length : i;
  return `line ${at + 1}:\n  committed: ${JSON.stringify(a[at] ?? '<end of file>')}\n  generated: ${JSON.stringify(b[at] ?? '<end of file>')}`;
}

describe('docs/reference: generated pages match the code', () => {
  it.each([...pages.keys()])('%s is up to date', (path) => {
    let committed: string;
    try {
      committed = readFileSync(join(ROOT, path), 'utf8');
    } catch {
      throw new Error(`${path} is missing; run: ${GEN_COMMAND}`);
    }
    if (committed !== pages.get(path)) {
      expect.fail(`${path} differs from what the code generates (${firstDifference(committed, pages.get(path)!)}); run: ${GEN_COMMAND}`);
    }
  });

  it('the pages cover every error code, every metric and every command', async () => {
    const errors = pages.get('docs/reference/errors.md')!;
    for (const code of ERROR_CODES) expect(errors, code).toContain(`<a id="${code}"></a>\`${code}\``);
    const metrics = pages.get('docs/reference/metrics.md')!;
    const { createMetrics } = await import('../../src/metrics/index.js');
    for (const m of await createMetrics({ defaultMetrics: false }).registry.getMetricsAsJSON()) expect(metrics, m.name).toContain(`## ${m.name}\n`);
    const cli = pages.get('docs/reference/cli.md')!;
    for (const { path } of walkCommands(buildProgram()).filter((c) => c.command.name() !== 'help')) expect(cli, path).toContain(`## agent-gate ${path}\n`);
  });

  it('the configuration page has a row for every option, with its doc, default and refusals', () => {
    const page = pages.get('docs/reference/configuration.md')!;
    const rows = page.split('\n').filter((l) => l.startsWith('| <a id="gate_'));
    expect(rows).toHaveLength(OPTION_ENTRIES.length);
    for (const [name, o] of OPTION_ENTRIES) {
      const row = rows.find((r) => r.startsWith(`| <a id="${name.toLowerCase()}"></a>\`${name}\` |`));
      expect(row, name).toBeDefined();
      expect(row, name).toContain(o.doc.replace(/\|/g, '\\|').replace(/</g, '&lt;').replace(/>/g, '&gt;'));
      if (typeof o.default === 'string') expect(row, name).toContain(`| \`${o.default}\` |`);
      if (o.default === undefined) expect(row, name).toContain('| — |');
      for (const r of o.refuse ?? []) expect(row, name).toContain(r.why);
      if (o.secret) expect(row, name).toContain('masks it');
    }
  });
});
