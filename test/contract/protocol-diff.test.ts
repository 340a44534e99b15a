/**
 * docs/protocol.md (the project's contract, extended as the code grows) against
 * ../shared/PROTOCOL.md (the v1 original that outside clients were written against), where that
 * file exists beside the repository. The test prints which sections were added, changed or
 * removed; differing is expected and never fails it. Removing a v1 section, or renaming its
 * heading, does fail it: a v1 client must still find every part of the contract it relied on.
 * Without ../shared (a fresh clone) there is nothing to compare and the test is skipped.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(__dirname, '../..');
const originalPath = resolve(root, '../shared/PROTOCOL.md');
const ownPath = resolve(root, 'docs/protocol.md');
const hasOriginal = existsSync(originalPath);

interface Section {
  heading: string;
  /** Level of the heading (1 for `#`), 0 for text before the first heading. */
  level: number;
  lines: string[];
}

/** Splits Markdown into sections at every ATX heading outside fenced code blocks. */
function sections(markdown: string): Section[] {
  const out: Section[] = [{ heading: '(preamble)', level: 0, lines: [] }];
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const h = fenced ? null : /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (h) out.push({ heading: h[2]!, level: h[1]!.length, lines: [] });
    else out.at(-1)!.lines.push(line);
  }
  return out;
}

/** A heading reduced to what identifies it: case, spacing and trailing punctuation ignored. */
const key = (heading: string) => heading.toLowerCase().replace(/\s+/g, ' ').replace(/[.:]+$/, '').trim();

/** Lines of `b` not in `a` and lines of `a` not in `b`, as multisets. */
function lineDelta(a: string[], b: string[]): { added: number; removed: number } {
  const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
  const ca = count(a.filter((l) => l.trim() !== ''));
  const cb = count(b.filter((l) => l.trim() !== ''));
  let added = 0;
  let removed = 0;
  for (const [l, n] of cb) added += Math.max(0, n - (ca.get(l) ?? 0));
  for (const [l, n] of ca) removed += Math.max(0, n - (cb.get(l) ?? 0));
  return { added, removed };
}

/** The comparison of the original contract with the project's own. */
function compareContracts(original: string, own: string) {
  const before = sections(original);
  const after = sections(own);
  const afterByKey = new Map(after.map((s) => [key(s.heading), s]));
  const beforeKeys = new Set(before.map((s) => key(s.heading)));
  const removed = before.filter((s) => !afterByKey.has(key(s.heading))).map((s) => s.heading);
  const added = after.filter((s) => !beforeKeys.has(key(s.heading))).map((s) => s.heading);
  const changed = before.flatMap((s) => {
    const now = afterByKey.get(key(s.heading));
    if (!now || now.lines.join('\n').trim() === s.lines.join('\n').trim()) return [];
    return [{ heading: s.heading, ...lineDelta(s.lines, now.lines) }];
  });
  return { removed, added, changed, unchanged: before.length - removed.length - changed.length };
}

describe('docs/protocol.md against the v1 original (../shared/PROTOCOL.md)', () => {
  it.skipIf(!hasOriginal)(`reports how the two differ${hasOriginal ? '' : ' (skipped: no ../shared/PROTOCOL.md beside the repository)'}`, () => {
    const report = compareContracts(readFileSync(originalPath, 'utf8'), readFileSync(ownPath, 'utf8'));
    const lines = [
      `docs/protocol.md vs ../shared/PROTOCOL.md: ${report.changed.length} section(s) changed, ${report.added.length} added, ${report.removed.length} removed, ${report.unchanged} unchanged`,
      ...report.changed.map((c) => `  ~ ${c.heading} (+${c.added} -${c.removed} lines)`),
      ...report.added.map((h) => `  + ${h}`),
      ...report.removed.map((h) => `  - ${h}`),
      report.changed.length + report.added.length + report.removed.length > 0 ? '  full diff: diff -u ../shared/PROTOCOL.md docs/protocol.md' : '  identical',
    ];
    console.log(lines.join('\n'));
    // Extending the contract is allowed; dropping what v1 clients were written against is not.
    expect(report.removed, 'v1 sections missing from docs/protocol.md (renamed or deleted)').toEqual([]);
  });

  it('the comparison notices a removed section and does not mind an added or changed one', () => {
    const v1 = '# P\nintro\n## 1. A\na\n## 2. B\nb\n```\n## not a heading\n```\n';
    expect(compareContracts(v1, v1)).toMatchObject({ removed: [], added: [], changed: [] });
    const extended = '# P\nintro\n## 1. A\na\nmore\n## 2. B\nb\n```\n## not a heading\n```\n## 3. C\nc\n';
    expect(compareContracts(v1, extended)).toMatchObject({ removed: [], added: ['3. C'], changed: [{ heading: '1. A', added: 1, removed: 0 }] });
    expect(compareContracts(v1, '# P\nintro\n## 1. A\na\n').removed).toEqual(['2. B']);
  });
});
