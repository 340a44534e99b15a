/**
 * Finds (or, as root with apt-get, installs) the system packages the tests start. When a
 * package cannot be had, the run stops with one line naming it. The optional tools (docker-compose,
 * promtool, k6) are installed the same way; without one, the tests that need it are skipped, with
 * one line each.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** binary -> Debian package that provides it */
export const REQUIRED: Record<string, string> = {
  'redis-server': 'redis-server',
  'redis-cli': 'redis-tools',
  openssl: 'openssl',
  // The nginx tests (test/nginx, test/integration/nginx-gate.test.ts) run a real nginx.
  nginx: 'nginx',
};

/**
 * file -> Debian package that provides it, for what is not a binary on PATH: the njs module
 * the rendered nginx configuration loads (src/nginx NJS_MODULE_PATH).
 */
export const REQUIRED_FILES: Record<string, string> = {
  '/usr/lib/nginx/modules/ngx_http_js_module.so': 'libnginx-mod-http-js',
};

function has(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

let updated = false;

/** Another apt-get or dpkg (a second test run, unattended upgrades) waits instead of failing. */
const LOCK_WAIT = 'DPkg::Lock::Timeout=300';

/** `apt-get update`, once per run. */
function aptUpdate(): void {
  if (!updated) execFileSync('apt-get', ['-o', LOCK_WAIT, 'update', '-qq'], { stdio: 'ignore', timeout: 300_000 });
  updated = true;
}

function aptInstall(pkgs: string[]): void {
  aptUpdate();
  execFileSync('apt-get', ['-o', LOCK_WAIT, 'install', '-y', '-qq', '--no-install-recommends', ...pkgs], {
    stdio: 'ignore',
    timeout: 600_000,
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

/** Root with apt-get: what installing anything here takes. */
function canInstall(): boolean {
  return process.getuid?.() === 0 && has('apt-get');
}

/**
 * Ensures every binary of `required` is on PATH and every file of `files` exists; throws one
 * clear line naming the missing packages.
 */
export function ensureSystemPackages(required: Record<string, string> = REQUIRED, files: Record<string, string> = REQUIRED_FILES): void {
  const missingNow = (): string[] => [
    ...Object.entries(required)
      .filter(([bin]) => !has(bin))
      .map(([, pkg]) => pkg),
    ...Object.entries(files)
      .filter(([file]) => !existsSync(file))
      .map(([, pkg]) => pkg),
  ];
  const missing = missingNow();
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing)];
  if (canInstall()) {
    try {
      aptInstall(pkgs);
    } catch {
      // Fall through to the one-line report below.
    }
  }
  const still = [...new Set(missingNow())];
  if (still.length > 0) {
    throw new Error(`missing system package: ${still.join(', ')} (install with: apt-get install ${still.join(' ')})`);
  }
}

/**
 * A tool some tests use and skip without (each says so in one line): how to get it here.
 * `install` runs only as root; it throws when it cannot.
 */
export interface OptionalTool {
  /** The binary on PATH. */
  bin: string;
  /** What is skipped without it. */
  skips: string;
  /** Under CI (`CI` set) a missing one fails the run, as `.ci/run` used to. */
  requiredInCi?: boolean;
  install(): void;
}

/** The repository root: test/setup/ is two levels below. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Throws unless `file` (symlinks resolved) and every directory from it up to `top` belong to
 * root or to us and are not writable by group or others: the k6 installer runs as root, and a
 * `shared` directory beside a checkout under /tmp could be anyone's.
 */
export function assertTrustedPath(file: string, top: string): void {
  const uid = process.getuid?.() ?? 0;
  let p = realpathSync(file);
  const stop = realpathSync(top);
  for (;;) {
    const st = statSync(p);
    if ((st.uid !== 0 && st.uid !== uid) || (st.mode & 0o022) !== 0) throw new Error(`${p} is writable by others or not ours: not run as root`);
    if (p === stop || p === dirname(p)) break;
    p = dirname(p);
  }
  if (p !== stop) throw new Error(`${file} is not under ${top}`);
}

/** The optional tools, in the order they are looked for. */
export const OPTIONAL_TOOLS: OptionalTool[] = [
  // Offline validation of docker-compose.yml (test/deploy/compose.test.ts); there is no engine here.
  { bin: 'docker-compose', skips: "docker-compose's own check of docker-compose.yml", requiredInCi: true, install: () => aptInstall(['docker-compose']) },
  {
    // promtool checks and unit-tests the alert rules (test/deploy/monitoring.test.ts). Only the
    // binary is taken from Debian's prometheus package: installing the package would start a
    // Prometheus server.
    bin: 'promtool',
    skips: 'the promtool checks of deploy/prometheus',
    install: () => {
      const dir = mkdtempSync(join(tmpdir(), 'agent-gate-promtool-'));
      try {
        const download = () => execFileSync('apt-get', ['download', 'prometheus'], { cwd: dir, stdio: 'ignore', timeout: 300_000 });
        try {
          download();
        } catch {
          // No package lists yet on a fresh machine.
          aptUpdate();
          download();
        }
        const deb = readdirSync(dir).find((f) => f.startsWith('prometheus_') && f.endsWith('.deb'));
        if (!deb) throw new Error('no prometheus .deb');
        execFileSync('dpkg', ['-x', deb, 'x'], { cwd: dir, stdio: 'ignore', timeout: 120_000 });
        // Beside the target, then renamed: a run stopped halfway leaves no half-written promtool.
        execFileSync('install', ['-m', '0755', join(dir, 'x', 'usr', 'bin', 'promtool'), '/usr/local/bin/.promtool.tmp'], { stdio: 'ignore' });
        renameSync('/usr/local/bin/.promtool.tmp', '/usr/local/bin/promtool');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  },
  {
    // The k6 smoke of the load scripts (test/load). No registry ships k6: ../shared/tools/k6
    // beside the repository holds a checked binary, when this checkout has it.
    bin: 'k6',
    skips: 'the k6 smoke of load/k6 (test/load)',
    install: () => {
      const shared = join(ROOT, '..', 'shared');
      const installer = join(shared, 'tools', 'k6', 'install');
      if (!existsSync(installer)) throw new Error(`no ${installer}`);
      assertTrustedPath(installer, shared);
      if (!has('xz')) aptInstall(['xz-utils']);
      execFileSync(installer, ['/usr/local/bin'], { stdio: 'ignore', timeout: 120_000 });
    },
  },
];

/** An optional tool still missing after {@link ensureOptionalTools}, with its one report line. */
export interface MissingTool {
  tool: OptionalTool;
  /** Names what the run skips without it and why. */
  line: string;
}

/** Installs (as root with apt-get) the optional tools that are missing; returns those still missing. */
export function ensureOptionalTools(tools: OptionalTool[] = OPTIONAL_TOOLS): MissingTool[] {
  const installing = canInstall();
  const missing: MissingTool[] = [];
  for (const tool of tools) {
    if (has(tool.bin)) continue;
    let why = process.getuid?.() === 0 ? 'no apt-get here' : 'install it as root';
    if (installing) {
      try {
        tool.install();
      } catch (err) {
        why = `could not install it: ${(err as Error).message.split('\n')[0]}`;
      }
    }
    if (!has(tool.bin)) missing.push({ tool, line: `optional tool missing: ${tool.bin} (${why}): skipping ${tool.skips}` });
  }
  return missing;
}

/** The binaries among `missing` that CI must have (`requiredInCi`). */
export function missingInCi(missing: MissingTool[]): string[] {
  return missing.filter((m) => m.tool.requiredInCi).map((m) => m.tool.bin);
}
