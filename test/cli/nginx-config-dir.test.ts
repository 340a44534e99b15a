/**
 * Issue 13 class 6: `agent-gate nginx-config --dir` writes the HMAC secret, so it must not trust
 * a directory another local user created or could write to, nor follow a name planted in it.
 * Real files and the real command (commander, exit status 2); the suite runs as root, so
 * "another user's directory" is a chown to uid 65534 and group/other-writable modes.
 */
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerNginxCommands } from '../../src/cli/nginx.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';

let fx: Fixtures;
let root: string;

beforeAll(async () => {
  fx = await makeFixtures();
  root = mkdtempSync(join(tmpdir(), 'agent-gate-nginx-dir-'));
  chmodSync(root, 0o711);
}, 60_000);

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
  if (fx) rmSync(fx.dir, { recursive: true, force: true });
});

function keyFile(): { file: string; b64: string } {
  const b64 = randomBytes(32).toString('base64');
  const file = join(root, `hmac-${randomBytes(4).toString('hex')}.key`);
  writeFileSync(file, `${b64}\n`, { mode: 0o600 });
  return { file, b64 };
}

/** A fresh path under the test root (not created). */
function freshDir(label: string): string {
  return join(root, `${label}-${randomBytes(4).toString('hex')}`);
}

async function run(dir: string, key = keyFile()): Promise<{ code: number; out: string; err: string; b64: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const program = new Command('agent-gate').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
  registerNginxCommands(program);
  const args = ['nginx-config', '--listen', '127.0.0.1:8443', '--gate-url', 'http://127.0.0.1:8080', '--tls-cert', fx.serverCertFile, '--tls-key', fx.serverKeyFile, '--client-ca', fx.caFile, '--hmac-key-file', key.file, '--kid', 'edge-1', '--dir', dir];
  try {
    await program.parseAsync(args, { from: 'user' });
    return { code: 0, out: out.join(''), err: err.join(''), b64: key.b64 };
  } catch (e) {
    expect(e).toBeInstanceOf(CommanderError);
    return { code: (e as CommanderError).exitCode, out: out.join(''), err: err.join(''), b64: key.b64 };
  }
}

function mode(path: string): number {
  return statSync(path).mode & 0o7777;
}

/** A file outside DIR that a planted symlink points at. */
function victim(label: string): { path: string; content: string } {
  const path = join(root, `victim-${label}-${randomBytes(4).toString('hex')}`);
  const content = `precious ${label}\n`;
  writeFileSync(path, content, { mode: 0o644 });
  return { path, content };
}

describe('nginx-config --dir: planted symlinks are replaced, never followed', () => {
  for (const name of ['nginx.conf', 'gate_fwd_key.json', 'gate_sign.js']) {
    it(`a symlink at DIR/${name} pointing elsewhere: the target is untouched, DIR/${name} is a new regular file`, async () => {
      const dir = freshDir('planted');
      mkdirSync(dir, { mode: 0o700 });
      const v = victim(name);
      symlinkSync(v.path, join(dir, name));
      const r = await run(dir);
      expect(r.code, r.err).toBe(0);
      expect(readFileSync(v.path, 'utf8')).toBe(v.content);
      expect(mode(v.path)).toBe(0o644);
      const st = lstatSync(join(dir, name));
      expect(st.isSymbolicLink()).toBe(false);
      expect(st.isFile()).toBe(true);
      if (name === 'gate_fwd_key.json') {
        // The key copy: the secret, mode 0600 exactly.
        expect(st.mode & 0o7777).toBe(0o600);
        expect(JSON.parse(readFileSync(join(dir, name), 'utf8'))).toEqual({ kid: 'edge-1', secret: r.b64 });
      }
      // No temporary file left behind.
      expect(readdirSync(dir).sort()).toEqual(['gate_fwd_key.json', 'gate_sign.js', 'nginx.conf', 'temp']);
    });
  }

  it('a symlink planted at DIR itself is refused, and nothing is written through it', async () => {
    const target = freshDir('real');
    mkdirSync(target, { mode: 0o700 });
    const link = freshDir('link');
    symlinkSync(target, link);
    const r = await run(link);
    expect(r.code).toBe(2);
    expect(r.err.trimEnd().split('\n'), r.err).toHaveLength(1);
    expect(r.err).toMatch(/^error: --dir .* is a symbolic link/);
    expect(readdirSync(target)).toEqual([]);
  });
});

describe('nginx-config --dir: a directory another user owns or can write to is refused', () => {
  for (const m of [0o777, 0o775, 0o757, 0o1777]) {
    it(`mode ${m.toString(8)}: exit 2, one line, nothing written`, async () => {
      const dir = freshDir(`mode${m.toString(8)}`);
      mkdirSync(dir);
      chmodSync(dir, m);
      const r = await run(dir);
      expect(r.code).toBe(2);
      expect(r.err.trimEnd().split('\n'), r.err).toHaveLength(1);
      expect(r.err).toMatch(/^error: --dir .* is writable by group or others/);
      expect(r.out).toBe('');
      expect(readdirSync(dir)).toEqual([]);
    });
  }

  it('owned by another uid (65534), mode 0755: exit 2, one line, nothing written', async () => {
    const dir = freshDir('foreign');
    mkdirSync(dir, { mode: 0o755 });
    chownSync(dir, 65534, 65534);
    const r = await run(dir);
    expect(r.code).toBe(2);
    expect(r.err.trimEnd().split('\n'), r.err).toHaveLength(1);
    expect(r.err).toMatch(/^error: --dir .* is owned by uid 65534, not by the caller/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('owned by another uid with a symlink planted at the key copy: refused, the target untouched', async () => {
    const dir = freshDir('foreign-planted');
    mkdirSync(dir, { mode: 0o755 });
    const v = victim('foreign-key');
    symlinkSync(v.path, join(dir, 'gate_fwd_key.json'));
    chownSync(dir, 65534, 65534);
    const r = await run(dir);
    expect(r.code).toBe(2);
    expect(readFileSync(v.path, 'utf8')).toBe(v.content);
    expect(mode(v.path)).toBe(0o644);
  });
});

describe('nginx-config --dir: the caller\'s own directory', () => {
  it('a missing DIR is created private (search only for others, for the nginx workers); the key copy is 0600', async () => {
    const dir = join(freshDir('parent'), 'out');
    const r = await run(dir);
    expect(r.code, r.err).toBe(0);
    expect(mode(dir)).toBe(0o711);
    expect(mode(join(dir, 'gate_fwd_key.json'))).toBe(0o600);
  });

  it('re-rendering into it replaces the files (key rotation): the new secret, still 0600', async () => {
    const dir = freshDir('rotate');
    mkdirSync(dir, { mode: 0o700 });
    const first = await run(dir);
    expect(first.code, first.err).toBe(0);
    // An operator's mistake in between must not survive the next render.
    chmodSync(join(dir, 'gate_fwd_key.json'), 0o644);
    const second = await run(dir);
    expect(second.code, second.err).toBe(0);
    expect(second.b64).not.toBe(first.b64);
    expect(JSON.parse(readFileSync(join(dir, 'gate_fwd_key.json'), 'utf8'))).toEqual({ kid: 'edge-1', secret: second.b64 });
    expect(mode(join(dir, 'gate_fwd_key.json'))).toBe(0o600);
    expect(readFileSync(join(dir, 'nginx.conf'), 'utf8')).toContain(join(dir, 'gate_fwd_key.json'));
    expect(readdirSync(dir).sort()).toEqual(['gate_fwd_key.json', 'gate_sign.js', 'nginx.conf', 'temp']);
  });
});
