/**
 * Real nginx for the nginx tests: finds (or, as root, installs) nginx and Debian's njs module,
 * starts a rendered configuration in the foreground on a random loopback port, and records
 * what reaches the "gate" (a small Node server standing in for it).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NJS_MODULE_PATH } from '../../src/nginx/index.js';
import { waitFor } from '../helpers/ports.js';
import { ensureSystemPackages } from '../setup/system.js';

/** Ensures nginx and the njs module are installed; throws one clear line otherwise. */
export function ensureNginx(): void {
  ensureSystemPackages({ nginx: 'nginx' });
  if (existsSync(NJS_MODULE_PATH)) return;
  if (process.getuid?.() === 0) {
    try {
      execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'libnginx-mod-http-js'], {
        stdio: 'ignore',
        timeout: 600_000,
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      });
    } catch {
      // reported below
    }
  }
  if (!existsSync(NJS_MODULE_PATH)) throw new Error(`missing system package: libnginx-mod-http-js (no ${NJS_MODULE_PATH}; install with: apt-get install libnginx-mod-http-js)`);
}

/**
 * A fresh temp dir, searchable by others (0711): nginx started as root runs its workers as
 * nobody, and they must reach DIR/temp below it (the renderer warns otherwise).
 */
export function tempDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `agent-gate-nginx-${label}-`));
  chmodSync(dir, 0o711);
  created.push(dir);
  return dir;
}

const created: string[] = [];

/** Removes every dir {@link tempDir} made (call after the nginx instances have stopped). */
export function removeTempDirs(): void {
  for (const dir of created.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Writes a key file holding a fresh base64 secret of `bytes` bytes; returns path and secret. */
export function writeKeyFile(dir: string, bytes = 32): { file: string; secret: Buffer; b64: string } {
  const secret = randomBytes(bytes);
  const file = join(dir, `hmac-${randomBytes(4).toString('hex')}.key`);
  writeFileSync(file, secret.toString('base64') + '\n', { mode: 0o600 });
  return { file, secret, b64: secret.toString('base64') };
}

/** `nginx -t` on a rendered DIR. */
export function nginxTest(dir: string): { ok: boolean; output: string } {
  const r = spawnSync('nginx', ['-t', '-p', dir, '-c', join(dir, 'nginx.conf')], { encoding: 'utf8' });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

/** A running nginx (foreground master, our child). */
export interface RunningNginx {
  port: number;
  url: string;
  dir: string;
  errorLog(): string;
  accessLog(): Record<string, string>[];
  stop(): Promise<void>;
}

/** Starts `nginx -p DIR -c DIR/nginx.conf -g 'daemon off; pid DIR/nginx.pid;'` and waits for `port`. */
export async function startNginx(dir: string, port: number): Promise<RunningNginx> {
  const child: ChildProcess = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', `daemon off; pid ${dir}/nginx.pid;`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  let exited = false;
  const exit = new Promise<void>((r) => child.once('exit', () => ((exited = true), r())));
  await waitFor(
    async () => {
      if (exited) throw new Error(`nginx exited: ${output}`);
      return new Promise<boolean>((resolve) => {
        const s: Socket = connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
        s.on('error', () => resolve(false));
      });
    },
    15_000,
    'nginx to listen',
  ).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}; nginx said: ${output}`);
  });
  if (exited) throw new Error(`nginx exited: ${output}`);
  const read = (f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : '');
  return {
    port,
    url: `https://127.0.0.1:${port}`,
    dir,
    errorLog: () => read('error.log'),
    accessLog: () =>
      read('access.log')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, string>),
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await exit;
    },
  };
}

/** A request as the stand-in gate saw it. */
export interface Seen {
  method: string;
  url: string;
  /** Raw header list, names as sent, in order, duplicates kept. */
  rawHeaders: string[];
  headers: IncomingMessage['headers'];
  body: Buffer;
}

/** The stand-in gate: records every request and answers 200 JSON. */
export interface RecordingGate {
  url: string;
  port: number;
  seen: Seen[];
  close(): Promise<void>;
}

/** Starts the stand-in gate on a random loopback port, over TLS when `tls` is given. */
export async function startRecordingGate(tls?: { cert: string; key: string }): Promise<RecordingGate> {
  const seen: Seen[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, headers: req.headers, body: Buffer.concat(chunks) });
      const body = JSON.stringify({ ok: true });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
  };
  const server: Server = tls ? createHttpsServer({ cert: tls.cert, key: tls.key }, handler) : createHttpServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : 0;
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    seen,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A TCP server that accepts and never answers (for 504). */
export async function startSilentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  return {
    port: typeof a === 'object' && a ? a.port : 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Every value of header `name` (case-insensitive) in a raw header list. */
export function rawValues(rawHeaders: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) out.push(rawHeaders[i + 1]!);
  return out;
}

/** A raw response: status, lowercase headers, body. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  text: string;
}

function parseResponse(buf: Buffer): RawResponse | undefined {
  const i = buf.indexOf('\r\n\r\n');
  if (i === -1) return undefined;
  const [line, ...rest] = buf.subarray(0, i).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const h of rest) {
    const j = h.indexOf(':');
    if (j > 0) headers[h.slice(0, j).trim().toLowerCase()] = h.slice(j + 1).trim();
  }
  const length = Number(headers['content-length'] ?? NaN);
  if (!Number.isFinite(length) || buf.length < i + 4 + length) return undefined;
  return { status: Number(line!.split(' ')[1]), headers, text: buf.subarray(i + 4, i + 4 + length).toString('utf8') };
}

/**
 * Writes `raw` bytes over a fresh connection (TLS with the given client certificate, or plain
 * TCP when `tls` is null) and resolves as soon as a complete response (with Content-Length) is
 * in, without waiting for nginx's lingering close.
 */
export async function rawExchange(port: number, tls: { ca: string; cert?: string; key?: string } | null, raw: string | Buffer): Promise<RawResponse> {
  const { connect: tlsConnect } = await import('node:tls');
  return new Promise((resolve, reject) => {
    const s: Socket = tls
      ? tlsConnect({ host: '127.0.0.1', port, ca: tls.ca, cert: tls.cert, key: tls.key, servername: 'localhost' }, () => s.write(raw))
      : connect(port, '127.0.0.1', () => s.write(raw));
    let buf = Buffer.alloc(0);
    let done = false;
    s.setTimeout(10_000, () => s.destroy(new Error('raw exchange timed out')));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const res = parseResponse(buf);
      if (res && !done) {
        done = true;
        s.destroy();
        resolve(res);
      }
    });
    s.on('error', (err) => {
      if (!done) reject(err);
    });
    s.on('close', () => {
      if (!done) reject(new Error(`connection closed before a complete response: ${buf.toString('latin1').slice(0, 200)}`));
    });
  });
}
