/**
 * Finds (or, as root with apt-get, installs) the system packages the tests start. When a
 * package cannot be had, the run stops with one line naming it.
 */
import { execFileSync, spawnSync } from 'node:child_process';

/** binary -> Debian package that provides it */
export const REQUIRED: Record<string, string> = {
  'redis-server': 'redis-server',
  'redis-cli': 'redis-tools',
  openssl: 'openssl',
};

function has(bin: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
}

let updated = false;

/** Ensures every binary is on PATH; throws one clear line per missing package. */
export function ensureSystemPackages(required: Record<string, string> = REQUIRED): void {
  const missing = Object.entries(required).filter(([bin]) => !has(bin));
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map(([, pkg]) => pkg))];
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
  const still = missing.filter(([bin]) => !has(bin)).map(([, pkg]) => pkg);
  if (still.length > 0) {
    throw new Error(`missing system package: ${[...new Set(still)].join(', ')} (install with: apt-get install ${[...new Set(still)].join(' ')})`);
  }
}
