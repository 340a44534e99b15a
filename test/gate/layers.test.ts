/**
 * The layering of src/ is enforced, not only described: the eslint-plugin-boundaries rule of
 * eslint.config.js (part of `npm run check`) refuses an import against the layers, and no two
 * folders of src/ import each other, directly or around a loop.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative, resolve } from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: plain JavaScript config module without types
import { sharedFiles } from '../../eslint.layers.js';

const root = resolve(__dirname, '../..');

async function boundaryErrors(file: string, code: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: root });
  const [result] = await eslint.lintText(code, { filePath: join(root, file) });
  return result!.messages.filter((m) => m.ruleId === 'boundaries/dependencies').map((m) => m.message);
}

describe('layers (eslint-plugin-boundaries in npm run check)', () => {
  it('refuses imports against the layers', async () => {
    // lib is pure: not even the gate.
    expect(await boundaryErrors('src/lib/probe.ts', "import { PIPELINE } from '../gate/index.js';\nexport const p = PIPELINE;\n")).toEqual([
      expect.stringContaining('from elements of type "lib" to elements of type "gate"'),
    ]);
    // A capability never reaches up into the app (the old services -> admin -> services loop).
    expect(await boundaryErrors('src/identity/probe.ts', "import { createServices } from '../services.js';\nexport const p = createServices;\n")).toEqual([
      expect.stringContaining('from elements of type "capability" to elements of type "app"'),
    ]);
    // The gate is below the app: no check may use the plugin or the admin listener.
    expect(await boundaryErrors('src/gate/checks/probe.ts', "import { agentGate } from '../../plugin.js';\nimport { buildAdminApp } from '../../admin/index.js';\nexport const p = [agentGate, buildAdminApp];\n")).toHaveLength(2);
    // The SDK stands alone.
    expect(await boundaryErrors('src/client/probe.ts', "import { TokenService } from '../tokens/index.js';\nexport const p = TokenService;\n")).toHaveLength(1);
  });

  it('lets the layers import downwards and the error catalog from anywhere', async () => {
    expect(await boundaryErrors('src/gate/checks/probe.ts', "import { GateError } from '../../errors.js';\nimport { checkPow } from '../../lib/pow.js';\nimport { DenyList } from '../../operator/index.js';\nexport const p = [GateError, checkPow, DenyList];\n")).toEqual([]);
    expect(await boundaryErrors('src/plugin-probe.ts', "import { PIPELINE } from './gate/index.js';\nimport { DenyList } from './operator/index.js';\nexport const p = [PIPELINE, DenyList];\n")).toEqual([]);
  });
});

/** src files, recursively. */
function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** The node of a file in the folder graph: its folder, a root file by itself, a shared file by itself. */
function nodeOf(file: string, shared: Set<string>): string {
  const rel = relative(root, file).replace(/\\/g, '/').replace(/\.js$/, '.ts');
  if (shared.has(rel)) return rel;
  const parts = rel.split('/');
  return parts.length > 2 ? parts[1]! : rel;
}

describe('no folder loops in src/', () => {
  it('the folder import graph has no cycle', () => {
    const shared = new Set<string>();
    for (const { pattern } of sharedFiles as { pattern: string }[]) {
      const m = /^(.*)\{(.*)\}(.*)$/.exec(pattern);
      for (const p of m ? m[2]!.split(',').map((x) => m[1]! + x + m[3]!) : [pattern]) shared.add(p);
    }
    const graph = new Map<string, Set<string>>();
    for (const file of sources(join(root, 'src'))) {
      const from = nodeOf(file, shared);
      for (const m of readFileSync(file, 'utf8').matchAll(/(?:import|export)[^;]*?from\s+['"](\.[^'"]+)['"]/g)) {
        const to = nodeOf(normalize(join(dirname(file), m[1]!)), shared);
        if (to !== from) (graph.get(from) ?? graph.set(from, new Set()).get(from)!).add(to);
      }
    }
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (n: string, path: string[]): void => {
      if (state.get(n) === 'done') return;
      if (state.get(n) === 'open') {
        cycles.push([...path.slice(path.indexOf(n)), n].join(' -> '));
        return;
      }
      state.set(n, 'open');
      for (const next of graph.get(n) ?? []) visit(next, [...path, n]);
      state.set(n, 'done');
    };
    for (const n of graph.keys()) visit(n, []);
    expect(cycles).toEqual([]);
  });
});
