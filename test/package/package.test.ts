/**
 * What `npm install agent-gate` gets: the `npm pack` contents (dist, the nginx templates the
 * renderer reads at runtime, the top-level docs; no tests, sources, keys, PKI files or .tmp), a
 * bin that runs from the unpacked tarball, `exports` whose types resolve for both entry points
 * (`.` and `./client`) under moduleResolution node16 (ESM) and bundler (checked by
 * @arethetypeswrong/cli), and an engines range every installed dependency accepts.
 *
 * dist/ is built first when it is missing or older than a source file (about half a minute).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import semver from 'semver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = resolve(__dirname, '../..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  engines: { node: string };
  bin: Record<string, string>;
  main: string;
  types: string;
  exports: Record<string, { types: string; default: string }>;
};

function newestMtime(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((max, e) => {
    const p = join(dir, e.name);
    return Math.max(max, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }, 0);
}

let files: string[] = [];
let tarball = '';
let workDir = '';

beforeAll(async () => {
  const built = (() => {
    try {
      return statSync(join(root, 'dist/index.js')).mtimeMs;
    } catch {
      return 0;
    }
  })();
  if (built < newestMtime(join(root, 'src'))) {
    await run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, timeout: 170_000 });
  }
  // Inside the repository, so that the unpacked package resolves its dependencies from node_modules.
  workDir = mkdtempSync(join(root, '.tmp', 'pack-'));
  const { stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', workDir], { cwd: root, timeout: 60_000 });
  const [report] = JSON.parse(stdout) as [{ filename: string; files: { path: string }[] }];
  files = report.files.map((f) => f.path).sort();
  tarball = join(workDir, report.filename);
  await run('tar', ['-xzf', tarball, '-C', workDir], { timeout: 30_000 });
}, 180_000);

afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('contains the build, the runtime templates and the top-level docs', () => {
    const required = [
      'package.json',
      'README.md',
      'HARDENING.md',
      'CHANGELOG.md',
      'LICENSE',
      'docs/protocol.md',
      pkg.main,
      pkg.types,
      ...Object.values(pkg.bin),
      ...Object.values(pkg.exports).flatMap((e) => [e.types, e.default]),
      // src/nginx/render.ts reads every template of nginx/ at runtime.
      ...readdirSync(join(root, 'nginx')).map((f) => `nginx/${f}`),
    ].map((p) => p.replace(/^\.\//, ''));
    expect(required.filter((p) => !files.includes(p)), 'missing from the package').toEqual([]);
  });

  it('contains no tests, sources, keys, PKI or scratch files', () => {
    const forbidden = files.filter(
      (p) =>
        /^(test|src|load|scripts|examples|deploy|pki|\.tmp|node_modules|coverage)\//.test(p) ||
        /(^|\/)\.tmp\//.test(p) ||
        /\.(test|spec)\.[cm]?[jt]s$/.test(p) ||
        /\.(key|pem|crt|csr|p12|pfx|jwk|crl|tgz)$/.test(p) ||
        /(^|\/)(index\.txt|pki\.json|\.env[^/]*)$/.test(p),
    );
    expect(forbidden).toEqual([]);
    // npm adds the README.md of every packed directory: docs/README.md comes with docs/protocol.md.
    expect(files.filter((p) => !/^(dist\/|nginx\/|docs\/(protocol|README)\.md$|[A-Z]+\.md$|package\.json$|LICENSE)/.test(p)), 'unexpected entries').toEqual([]);
  });

  it('the bin runs from the unpacked package and prints the package version', async () => {
    const bin = join(workDir, 'package', Object.values(pkg.bin)[0]!);
    const { stdout } = await run(process.execPath, [bin, '--version'], { timeout: 30_000 });
    expect(stdout.trim()).toBe(pkg.version);
  });

  it('exports: types resolve for "." and "./client" under node16 (ESM) and bundler (@arethetypeswrong/cli)', async () => {
    const attw = join(root, 'node_modules/@arethetypeswrong/cli/dist/index.js');
    // esm-only: the package is ESM only, so CommonJS require() is not a supported way in.
    const { stdout } = await run(process.execPath, [attw, tarball, '--profile', 'esm-only', '--format', 'json'], { cwd: workDir, timeout: 60_000 }).catch(
      (err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }),
    );
    const { analysis } = JSON.parse(stdout) as {
      analysis: {
        entrypoints: Record<string, { resolutions: Record<string, { resolution?: { fileName: string; isTypeScript: boolean } }> }>;
        problems: { kind: string; entrypoint: string; resolutionKind: string }[];
      };
    };
    for (const entry of ['.', './client']) {
      for (const kind of ['node16-esm', 'bundler']) {
        const fileName = analysis.entrypoints[entry]?.resolutions[kind]?.resolution?.fileName;
        expect(fileName, `${entry} under ${kind}`).toBe(`/node_modules/agent-gate/${pkg.exports[entry]!.types.replace(/^\.\//, '')}`);
      }
    }
    expect(analysis.problems.filter((p) => p.resolutionKind === 'node16-esm' || p.resolutionKind === 'bundler')).toEqual([]);
  });
});

describe('engines', () => {
  it(`every installed package accepts the lowest Node version of "engines" (${pkg.engines.node}) and the one running`, () => {
    const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { engines?: { node?: string } | string[]; optional?: boolean }>;
    };
    const lowest = semver.minVersion(pkg.engines.node)!.version;
    const refusing = Object.entries(lock.packages)
      // Optional packages that do not fit are skipped by npm, not installed.
      .filter(([path, p]) => path !== '' && !p.optional && !Array.isArray(p.engines) && p.engines?.node)
      .flatMap(([path, p]) => {
        const range = (p.engines as { node: string }).node;
        return [lowest, process.version].filter((v) => !semver.satisfies(v, range)).map((v) => `${path} wants node ${range}, not ${v}`);
      });
    expect(refusing).toEqual([]);
  });
});
