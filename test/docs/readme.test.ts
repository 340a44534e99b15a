/**
 * The README stays the short front page the docs/ tree hangs from: at most 200 lines, the two
 * commands a new user runs, the flow and the deployment modes as Mermaid diagrams, links into
 * docs/, and no performance figures of its own (they go stale: load/RESULTS.md has them).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const readme = readFileSync(resolve(__dirname, '../../README.md'), 'utf8');
const pkg = JSON.parse(readFileSync(resolve(__dirname, '../../package.json'), 'utf8')) as { scripts: Record<string, string> };

describe('README.md', () => {
  it('is at most 200 lines', () => {
    expect(readme.trimEnd().split('\n').length).toBeLessThanOrEqual(200);
  });

  it('shows the two commands, and they are the package scripts', () => {
    expect(readme).toContain('```sh\nnpm ci && npm start\n```');
    expect(readme).toContain('```sh\nnpm test\n```');
    expect(pkg.scripts.start).toMatch(/build.*node dist\/cli\/main\.js dev$/);
    expect(pkg.scripts.test).toBe('vitest run');
  });

  it('has the flow as a Mermaid sequence diagram and the deployment modes as a Mermaid diagram', () => {
    expect(readme).toMatch(/```mermaid\nsequenceDiagram\n/);
    expect(readme).toMatch(/```mermaid\nflowchart /);
    for (const mode of ['**Direct**', '**Behind nginx**', '**Embedded**', '**Authorizer**']) expect(readme).toContain(mode);
  });

  it('links into every part of docs/', () => {
    for (const part of ['docs/guides/', 'docs/reference/', 'docs/operations/', 'docs/design/', 'docs/protocol.md']) expect(readme).toContain(`](${part}`);
  });

  it('quotes no performance figures, only links load/RESULTS.md', () => {
    expect(readme).toContain('](load/RESULTS.md)');
    expect(readme).not.toMatch(/\d\s*(×|x nginx|req(uests)?\/s|flows\/s|ms p99|p99 \d)/);
  });
});
