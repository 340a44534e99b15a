/**
 * Real nginx for the nginx tests: finds (or, as root, installs) nginx and Debian's njs module,
 * starts a rendered configuration in the foreground on a random loopback port, and records
 * what reaches the "gate" (a small Node server standing in for it).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NJS_MODULE_PATH, renderNginxConfig, type NginxConfigOptions, type RenderedNginxConfig } from '../../src/nginx/index.js';
import type { Fixtures } from '../helpers/fixtures.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { ensureSystemPackages } from '../setup/system.js';

/**
 * Renders `agent-gate nginx-config` with the test PKI of `fx` (server certificate and key, client
 * CA unless `o.clientCa` names another), listening on 127.0.0.1:`port`.
 */
export async function renderTestConfig(
  fx: Pick<Fixtures, 'serverCertFile' | 'serverKeyFile' | 'caFile'>,
  port: number,
  o: Omit<NginxConfigOptions, 'listen' | 'tlsCert' | 'tlsKey' | 'clientCa'> & { clientCa?: string },
): Promise<RenderedNginxConfig> {
  return renderNginxConfig({ ...o, listen: `127.0.0.1:${port}`, tlsCert: fx.serverCertFile, tlsKey: fx.serverKeyFile, clientCa: o.clientCa ?? fx.caFile });
}

/** Starts nginx on a free loopback port with the configuration `render(dir, port)` writes into a fresh directory (named after `label`). */
export async function launchNginx(label: string, render: (dir: string, port: number) => Promise<void>): Promise<RunningNginx> {
  const dir = join(tempDir(label), 'out');
  const port = await freePort();
  await render(dir, port);
  return startNginx(dir, port);
}

/** Ensures nginx and the njs module are installed (or installs them as root); throws one clear line otherwise. */
export function ensureNginx(): void {
  ensureSystemPackages({ nginx: 'nginx' }, { [NJS_MODULE_PATH]: 'libnginx-mod-http-js' });
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
  /** The master's pid (also the process group of master and workers). */
  pid: number;
  errorLog(): string;
  accessLog(): Record<string, string>[];
  /**
   * SIGHUP to the master (what `nginx -s reload` sends): re-reads DIR/nginx.conf, starts new
   * workers and lets the old ones finish. Resolves once the new workers are started; rejects
   * with the error log's lines when the new configuration was refused (the old one keeps running).
   */
  reload(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Masters still running, killed (with their workers) if the test process exits without stopping them. */
const running = new Set<number>();
let exitHookInstalled = false;

/** SIGKILL to the process group `pid` leads (master and workers); ignores a group already gone. */
function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: nothing left
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pid of running) killGroup(pid);
  });
}

/** Starts `nginx -p DIR -c DIR/nginx.conf -g 'daemon off; pid DIR/nginx.pid;'` and waits for `port`. */
export async function startNginx(dir: string, port: number): Promise<RunningNginx> {
  // Its own process group (detached), so that master and workers can be killed together by
  // the master's pid even if the master itself is gone; killed at exit if a test forgot to.
  const child: ChildProcess = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', `daemon off; pid ${dir}/nginx.pid;`], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pid = child.pid;
  if (pid === undefined) throw new Error('nginx did not start');
  installExitHook();
  running.add(pid);
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  let exited = false;
  const exit = new Promise<void>((r) =>
    child.once('exit', () => {
      exited = true;
      // Workers orphaned by a master that died abnormally would keep the port.
      killGroup(pid);
      running.delete(pid);
      r();
    }),
  );
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
    killGroup(pid);
    throw new Error(`${(err as Error).message}; nginx said: ${output}`);
  });
  if (exited) throw new Error(`nginx exited: ${output}`);
  const read = (f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : '');
  return {
    port,
    url: `https://127.0.0.1:${port}`,
    dir,
    pid,
    errorLog: () => read('error.log'),
    accessLog: () =>
      read('access.log')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, string>),
    reload: async (timeoutMs = 15_000) => {
      if (exited) throw new Error(`nginx is not running: ${output}`);
      const from = read('error.log').length;
      process.kill(pid, 'SIGHUP');
      let fresh = '';
      await waitFor(
        () => {
          if (exited) return true;
          fresh = read('error.log').slice(from);
          if (/\[emerg\]/.test(fresh)) return true;
          return /reconfiguring[\s\S]*start worker process/.test(fresh);
        },
        timeoutMs,
        'nginx to start the workers of the reloaded configuration',
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}; error.log since the reload: ${fresh}`);
      });
      if (exited) throw new Error(`nginx exited during the reload: ${output}${fresh}`);
      if (/\[emerg\]/.test(fresh)) throw new Error(`nginx refused the reloaded configuration: ${fresh}`);
    },
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      // A fast shutdown takes milliseconds; never hang a test run on it.
      const timer = setTimeout(() => killGroup(pid), 10_000);
      await exit;
      clearTimeout(timer);
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

/** A raw exchange read to its end: the head as sent, the body undecoded, and whether nginx closed the connection. */
export interface ClosingResponse {
  status: number;
  head: string;
  headers: Record<string, string>;
  body: string;
  closed: boolean;
}

/**
 * Writes `raw` over a fresh TLS connection (presenting `tls.cert` when given) and reads until
 * the server closes it or `waitMs` passes: for answers without Content-Length (an upstream's
 * chunked body) and for telling whether nginx closed the connection after its answer.
 */
export async function rawUntilClose(port: number, tls: { ca: string; cert?: string; key?: string }, raw: string, waitMs = 3000): Promise<ClosingResponse> {
  const { connect: tlsConnect } = await import('node:tls');
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: tls.ca, cert: tls.cert, key: tls.key, servername: 'localhost' }, () => s.write(raw));
    const chunks: Buffer[] = [];
    let closed = false;
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      const t = Buffer.concat(chunks).toString('latin1');
      const i = t.indexOf('\r\n\r\n');
      const head = i === -1 ? t : t.slice(0, i);
      const headers: Record<string, string> = {};
      for (const h of head.split('\r\n').slice(1)) {
        const j = h.indexOf(':');
        if (j > 0) headers[h.slice(0, j).trim().toLowerCase()] = h.slice(j + 1).trim();
      }
      resolve({ status: Number(t.split(' ')[1]), head, headers, body: i === -1 ? '' : t.slice(i + 4), closed });
    };
    const timer = setTimeout(() => (s.destroy(), done()), waitMs);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (e) => (clearTimeout(timer), chunks.length ? done() : reject(e)));
    s.on('close', () => ((closed = true), clearTimeout(timer), done()));
  });
}

/** One HTTP/1.1 request as it crossed a {@link CaptureRelay}, byte for byte. */
export interface CapturedRequest {
  /** Local time (ms) the request was complete. */
  at: number;
  method: string;
  /** The request target, raw. */
  target: string;
  /** Header lines in order, names as sent, duplicates kept. */
  headers: [string, string][];
  body: Buffer;
  /** Exactly the bytes received. */
  raw: Buffer;
  /** True when the relay answered it itself instead of forwarding it (see {@link CaptureRelay.hold}). */
  held: boolean;
}

/** Every value of header `name` (case-insensitive) of a captured request. */
export function capturedValues(req: CapturedRequest, name: string): string[] {
  return req.headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
}

/**
 * A loopback TCP relay between nginx and the gate that records every request nginx sends (on
 * kept-alive connections too) and forwards the bytes unchanged; answers flow back unchanged.
 */
export interface CaptureRelay {
  port: number;
  /** `http://127.0.0.1:<port>`, for `--gate-url`. */
  url: string;
  captured: CapturedRequest[];
  /**
   * While true, requests are recorded but not forwarded: the relay answers each with 200
   * `{"held":true}` itself, so the gate never sees it and its signed id stays unused (a
   * capture that can be replayed later as if fresh).
   */
  hold: boolean;
  /** Connections from nginx currently open. */
  readonly open: number;
  close(): Promise<void>;
}

const HELD_ANSWER = 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n{"held":true}';

/** Length of a complete chunked body at the start of `buf`, or undefined while incomplete. */
function chunkedLength(buf: Buffer): number | undefined {
  let at = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', at);
    if (eol === -1) return undefined;
    const size = parseInt(buf.subarray(at, eol).toString('latin1').split(';')[0]!.trim(), 16);
    if (!Number.isFinite(size)) throw new Error('bad chunk size');
    at = eol + 2;
    if (size === 0) {
      // No trailers from nginx: the final CRLF.
      return buf.length >= at + 2 ? at + 2 : undefined;
    }
    if (buf.length < at + size + 2) return undefined;
    at += size + 2;
  }
}

/** The first complete request in `buf`, or undefined while incomplete. */
export function parseRequest(buf: Buffer): Omit<CapturedRequest, 'at' | 'held'> | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const [line, ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
  const [method, target] = line!.split(' ') as [string, string];
  const headers: [string, string][] = lines.map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i), l.slice(i + 1).trim()];
  });
  const get = (n: string) => headers.find(([k]) => k.toLowerCase() === n)?.[1];
  const bodyStart = end + 4;
  let bodyLength = 0;
  if (/chunked/i.test(get('transfer-encoding') ?? '')) {
    const n = chunkedLength(buf.subarray(bodyStart));
    if (n === undefined) return undefined;
    bodyLength = n;
  } else {
    bodyLength = Number(get('content-length') ?? 0);
    if (buf.length < bodyStart + bodyLength) return undefined;
  }
  const raw = Buffer.from(buf.subarray(0, bodyStart + bodyLength));
  return { method, target, headers, body: raw.subarray(bodyStart), raw };
}

/** Starts a {@link CaptureRelay} on a random loopback port in front of `127.0.0.1:targetPort`. */
export async function startCaptureRelay(targetPort: number): Promise<CaptureRelay> {
  const sockets = new Set<Socket>();
  const clients = new Set<Socket>();
  const server = createNetServer((client) => {
    sockets.add(client);
    clients.add(client);
    let buf = Buffer.alloc(0);
    let upstream: Socket | undefined;
    const closeBoth = () => {
      client.destroy();
      upstream?.destroy();
      sockets.delete(client);
      clients.delete(client);
    };
    const toGate = (): Socket => {
      if (upstream) return upstream;
      const u = connect(targetPort, '127.0.0.1');
      sockets.add(u);
      u.on('data', (d: Buffer) => client.write(d));
      u.on('error', () => {});
      u.on('close', () => {
        sockets.delete(u);
        closeBoth();
      });
      upstream = u;
      return u;
    };
    client.on('error', () => {});
    client.on('close', closeBoth);
    client.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        let req: ReturnType<typeof parseRequest>;
        try {
          req = parseRequest(buf);
        } catch {
          closeBoth();
          return;
        }
        if (!req) return;
        buf = buf.subarray(req.raw.length);
        const held = relay.hold;
        relay.captured.push({ ...req, at: Date.now(), held });
        if (held) client.write(HELD_ANSWER);
        else toGate().write(req.raw);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : 0;
  const relay: CaptureRelay = {
    port,
    url: `http://127.0.0.1:${port}`,
    captured: [],
    hold: false,
    get open() {
      return clients.size;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return relay;
}

/** Serializes a (possibly edited) captured request, with `Connection: close` added. */
export function serializeRequest(req: Pick<CapturedRequest, 'method' | 'target' | 'headers' | 'body'>): Buffer {
  const head = [`${req.method} ${req.target} HTTP/1.1`, ...req.headers.filter(([n]) => n.toLowerCase() !== 'connection').map(([n, v]) => `${n}: ${v}`), 'Connection: close', '', ''].join('\r\n');
  return Buffer.concat([Buffer.from(head, 'latin1'), req.body]);
}

/**
 * Sends `raw` over plain TCP to `127.0.0.1:port` and reads the answer until the server closes
 * (the request says `Connection: close`); de-chunks a chunked body.
 */
export async function sendRaw(port: number, raw: Buffer): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(raw));
    const chunks: Buffer[] = [];
    s.setTimeout(10_000, () => s.destroy(new Error('raw request timed out')));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => {
      const buf = Buffer.concat(chunks);
      const i = buf.indexOf('\r\n\r\n');
      if (i === -1) return reject(new Error(`no response head: ${buf.toString('latin1').slice(0, 200)}`));
      const [line, ...rest] = buf.subarray(0, i).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const h of rest) {
        const j = h.indexOf(':');
        if (j > 0) headers[h.slice(0, j).trim().toLowerCase()] = h.slice(j + 1).trim();
      }
      let body = buf.subarray(i + 4);
      if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
        const parts: Buffer[] = [];
        let at = 0;
        for (;;) {
          const eol = body.indexOf('\r\n', at);
          if (eol === -1) break;
          const size = parseInt(body.subarray(at, eol).toString('latin1'), 16);
          if (!(size > 0)) break;
          parts.push(body.subarray(eol + 2, eol + 2 + size));
          at = eol + 2 + size + 2;
        }
        body = Buffer.concat(parts);
      }
      resolve({ status: Number(line!.split(' ')[1]), headers, text: body.toString('utf8') });
    });
  });
}

/**
 * Raises the rendered per-address edge limits (100 r/s on the gate paths, 10 r/s on P/v1/) to
 * 10000 r/s, for suites whose many requests all come from 127.0.0.1 (the limits themselves
 * are tested in test/nginx). Throws when the rendered configuration no longer has them.
 */
export function relaxEdgeLimits(conf: string): string {
  for (const rate of ['rate=100r/s;', 'rate=10r/s;']) if (!conf.includes(rate)) throw new Error(`rendered nginx.conf has no ${rate}`);
  return conf.replace('rate=100r/s;', 'rate=10000r/s;').replace('rate=10r/s;', 'rate=10000r/s;');
}
