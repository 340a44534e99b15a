/**
 * Every relative link in the project's Markdown resolves: README.md, HARDENING.md, SECURITY.md,
 * CHANGELOG.md and docs/**.md. A link to a file must name an existing file or directory; a
 * `#anchor` (in the same page or another Markdown page) must name a heading there (GitHub's
 * slugs) or an explicit `<a id>`. External links (http:, https:, mailto:) are not fetched.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(__dirname, '../..');

function markdownUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? markdownUnder(join(dir, e.name)) : e.name.endsWith('.md') ? [join(dir, e.name)] : [],
  );
}

const files = [
  ...['README.md', 'HARDENING.md', 'SECURITY.md', 'CHANGELOG.md'].map((f) => join(root, f)).filter((f) => existsSync(f)),
  ...markdownUnder(join(root, 'docs')),
].sort();

/** The text outside fenced code blocks and inline code spans, where links are links. */
function prose(markdown: string): string {
  let fenced = false;
  return markdown
    .split('\n')
    .map((line) => {
      if (/^\s*(```|~~~)/.test(line)) {
        fenced = !fenced;
        return '';
      }
      return fenced ? '' : line.replace(/`[^`]*`/g, '``');
    })
    .join('\n');
}

/** Inline links and images `[text](target "title")`, and reference definitions `[id]: target`. */
function linksOf(markdown: string): string[] {
  const text = prose(markdown);
  const inline = [...text.matchAll(/!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]!);
  const defs = [...text.matchAll(/^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/gm)].map((m) => m[1]!);
  return [...inline, ...defs];
}

/** GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes. */
function slug(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '')
    .replace(/ /g, '-');
}

const anchorCache = new Map<string, Set<string>>();
/** Every anchor a Markdown file offers: heading slugs (with GitHub's -1, -2 for repeats) and `<a id>`/`name`. */
function anchorsOf(file: string): Set<string> {
  let anchors = anchorCache.get(file);
  if (anchors) return anchors;
  anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (fenced) continue;
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (h) {
      const base = slug(h[1]!);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      anchors.add(n === 0 ? base : `${base}-${n}`);
    }
    for (const m of line.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) anchors.add(m[1]!);
  }
  anchorCache.set(file, anchors);
  return anchors;
}

/** What is wrong with `target` as linked from `file`, or undefined when it resolves. */
function problemOf(file: string, target: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return undefined; // external (https:, mailto:, ...)
  const [pathPart, anchor] = target.split('#', 2) as [string, string | undefined];
  let path = file;
  if (pathPart !== '') {
    let decoded: string;
    try {
      decoded = decodeURIComponent(pathPart.split('?')[0]!);
    } catch {
      return 'not a valid URL path';
    }
    path = decoded.startsWith('/') ? join(root, decoded) : resolve(dirname(file), decoded);
    if (!path.startsWith(root + '/') && path !== root) return 'points outside the repository';
    if (!existsSync(path)) return `${relative(root, path)} does not exist`;
  }
  if (anchor !== undefined && anchor !== '' && path.endsWith('.md') && statSync(path).isFile()) {
    if (!anchorsOf(path).has(decodeURIComponent(anchor).toLowerCase())) return `no heading or anchor #${anchor} in ${relative(root, path)}`;
  }
  return undefined;
}

describe('relative links in the Markdown resolve', () => {
  it('finds the documents', () => {
    expect(files.map((f) => relative(root, f))).toEqual(expect.arrayContaining(['README.md', 'HARDENING.md', 'docs/protocol.md']));
  });

  it.each(files.map((f) => [relative(root, f), f] as const))('%s', (_name, file) => {
    const dead = linksOf(readFileSync(file, 'utf8'))
      .map((target) => ({ target, problem: problemOf(file, target) }))
      .filter((l) => l.problem !== undefined)
      .map((l) => `${l.target}: ${l.problem}`);
    expect(dead, `dead links in ${relative(root, file)}`).toEqual([]);
  });

  it('the checker itself: slugs as GitHub makes them, and a dead link is caught', () => {
    expect(slug('10. Metrics (admin listener, prefix `agent_gate_`)')).toBe('10-metrics-admin-listener-prefix-agent_gate_');
    expect(slug('Failure modes: what agents and operators see')).toBe('failure-modes-what-agents-and-operators-see');
    expect(slug('mTLS: direct or nginx with header signing')).toBe('mtls-direct-or-nginx-with-header-signing');
    expect(linksOf('see [a](x.md#y) and `[b](no.md)`\n```\n[c](no.md)\n```\n[d]: ./z.md')).toEqual(['x.md#y', './z.md']);
    const readme = join(root, 'README.md');
    expect(problemOf(readme, 'docs/no-such-page.md')).toMatch(/does not exist/);
    expect(problemOf(readme, 'HARDENING.md#no-such-heading')).toMatch(/no heading/);
    expect(problemOf(readme, 'HARDENING.md#redis')).toBeUndefined();
  });
});
