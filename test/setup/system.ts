/**
 * Finds (or, as root with apt-get, installs) the system packages the tests start. When a
 * package cannot be had, the run stops with one line naming it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

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
  const canInstall = process.getuid?.() === 0 && has('apt-get');
  if (canInstall) {
    try {
      if (!updated) execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore', timeout: 300_000 });
      updated = true;
      execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], {
        stdio: 'ignore',
        timeout: 600_000,
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      });
    } catch {
      // Fall through to the one-line report below.
    }
  }
  const still = [...new Set(missingNow())];
  if (still.length > 0) {
    throw new Error(`missing system package: ${still.join(', ')} (install with: apt-get install ${still.join(' ')})`);
  }
}
