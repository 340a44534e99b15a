/**
 * The SDK's test gate: the real gate (`buildGate` via test/helpers/gate.ts, real TLS with the
 * fixture PKI, the contract fixtures' CRL, admin token and denied agent) in front of a real,
 * scriptable upstream, optionally behind the TCP fault proxy (resets, stalls, slow answers)
 * and on the suite's Redis through a second fault proxy (an unreachable or stalled store).
 * Counters are read off the gate's own HTTPS server: requests per endpoint as they arrive,
 * TCP connections, TLS handshakes and resumed sessions.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import Fastify from 'fastify';
import { afterAll, afterEach, beforeAll, beforeEach, expect, inject, vi } from 'vitest';
import { GateClient, type GateClientOptions } from '../../src/client/index.js';
import { formatViolation, loadConfig } from '../../src/config/index.js';
import { agentGate } from '../../src/index.js';
import type { KeyAndCert } from '../../src/pki/index.js';
import { contractEnv, makeContractFixtures, P, type ContractFixtures } from '../conformance/contract.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';
import { closeAll } from '../helpers/suite.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { startUpstream, type RecordingUpstream, type UpstreamReply } from '../helpers/upstream.js';

export { CONTRACT_ADMIN_TOKEN, denyViaAdmin, makeContractFixtures, P } from '../conformance/contract.js';

/** Options of {@link startClientGate}. */
export interface ClientGateOptions {
  /** Extra GATE_* variables. */
  env?: Record<string, string>;
  /** Puts the TCP fault proxy between clients and the gate: `url` is then the proxy's. */
  proxy?: boolean;
  /** Runs on the suite's Redis through a TCP fault proxy (`redis`) instead of the memory store. */
  redisProxy?: boolean;
  /** The gate's server certificate (chain) and key, PEM; default the fixture's. */
  tls?: { cert: string; key: string };
}

/** A running gate for SDK tests. */
export interface ClientGate {
  /** Where clients connect: the gate, or the fault proxy in front of it. */
  url: string;
  gate: RunningGate;
  up: RecordingUpstream;
  /** Requests that arrived at the gate: its two endpoints and gated (proxied) paths. */
  calls: { challenge: number; token: number; gated: number };
  /** TLS handshakes completed by the gate, and how many resumed a session. */
  tls: { connections: number; resumed: number };
  /** TCP connections accepted by the gate. */
  tcp: number;
  /** The fault proxy in front of the gate (with `proxy`). */
  proxy?: TcpProxy;
  /** The fault proxy between the gate and Redis (with `redisProxy`). */
  redis?: TcpProxy;
  /** Runs as a request arrives, before the gate looks at it. */
  onArrival?: (kind: 'challenge' | 'token' | 'gated') => void;
  /**
   * The gate's clock is `Date.now() + shiftMs`: a test faking Date moves both sides, and a
   * shift moves the gate's alone (a skewed agent clock, a window boundary).
   */
  shiftMs: number;
  /** Moves the gate's clock forward to `afterMs` past the next multiple of `windowMs` (fixed-window limits). */
  alignClock(windowMs: number, afterMs?: number): void;
  /** Between tests on a shared gate: counters, upstream script, hooks, clock and proxies back to normal. */
  reset(): void;
  close(): Promise<void>;
}

/**
 * The upstream's default answer: what it saw, as JSON. `token_id` is the gate's
 * X-Agent-Token-Id (the `jti` of the access token the gate accepted).
 */
export function echo(seen: RecordingUpstream['seen'][number]): UpstreamReply {
  return {
    status: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      method: seen.method,
      path: seen.url,
      token_id: seen.headers['x-agent-token-id'] ?? null,
      body: seen.body.toString('utf8'),
      xtest: seen.headers['x-test'] ?? null,
    }),
  };
}

let files = 0;

/** Starts a gate for SDK tests (memory store unless `redisProxy`). */
export async function startClientGate(fx: ContractFixtures, opts: ClientGateOptions = {}): Promise<ClientGate> {
  const up = await startUpstream();
  up.reply = echo;
  const redis = opts.redisProxy ? await startTcpProxy({ port: Number(new URL(inject('redisUrl')).port) }) : undefined;
  const tlsEnv: Record<string, string> = {};
  if (opts.tls) {
    const n = ++files;
    tlsEnv.GATE_TLS_CERT = join(fx.dir, `client-gate-${n}.crt`);
    tlsEnv.GATE_TLS_KEY = join(fx.dir, `client-gate-${n}.key`);
    writeFileSync(tlsEnv.GATE_TLS_CERT, opts.tls.cert);
    writeFileSync(tlsEnv.GATE_TLS_KEY, opts.tls.key, { mode: 0o600 });
  }
  const store: Record<string, string> = redis ? { GATE_STORE: 'redis', GATE_REDIS_URL: `redis://${redis.address}` } : { GATE_STORE: 'memory' };
  let shiftMs = 0;
  const gate = await startGate(testEnv(fx, { ...contractEnv(fx), ...store, ...tlsEnv, GATE_UPSTREAM_URL: up.url, ...opts.env }), {
    now: () => Date.now() + shiftMs,
  });
  await gate.gate.store.waitReady?.(5000);
  const proxy = opts.proxy ? await startTcpProxy({ port: Number(new URL(gate.url).port) }) : undefined;
  const h: ClientGate = {
    url: proxy ? `https://127.0.0.1:${proxy.port}` : gate.url,
    gate,
    up,
    calls: { challenge: 0, token: 0, gated: 0 },
    tls: { connections: 0, resumed: 0 },
    tcp: 0,
    proxy,
    redis,
    get shiftMs() {
      return shiftMs;
    },
    set shiftMs(v: number) {
      shiftMs = v;
    },
    alignClock(windowMs, afterMs = 20) {
      const now = Date.now() + shiftMs;
      shiftMs += Math.ceil(now / windowMs) * windowMs + afterMs - now;
    },
    reset() {
      h.calls = { challenge: 0, token: 0, gated: 0 };
      h.tls = { connections: 0, resumed: 0 };
      h.tcp = 0;
      up.seen.length = 0;
      up.reply = echo;
      h.onArrival = undefined;
      shiftMs = 0;
      if (proxy) proxy.mode = 'pass';
      if (redis) redis.mode = 'pass';
    },
    close: async () => {
      await proxy?.close();
      await gate.close();
      await redis?.close();
      await up.close();
    },
  };
  const server = gate.gate.publicApp.server;
  server.on('connection', () => h.tcp++);
  server.on('secureConnection', (sock: TLSSocket) => {
    h.tls.connections++;
    if (sock.isSessionReused()) h.tls.resumed++;
  });
  // Ahead of fastify's own listener: the gate's checks may run synchronously inside it.
  server.prependListener('request', (req: { url?: string }) => {
    const url = req.url ?? '';
    const kind = url.startsWith(`${P}/v1/challenge`) ? 'challenge' : url.startsWith(`${P}/v1/token`) ? 'token' : url.startsWith(`${P}/`) ? undefined : 'gated';
    if (!kind) return;
    h.calls[kind]++;
    h.onArrival?.(kind);
  });
  return h;
}

/**
 * Holds one gated request at the upstream of `h` (a gate with GATE_MAX_INFLIGHT=1) until
 * `release()`, so that the gate answers requests meanwhile 503 overloaded (Retry-After: 1).
 * Resolves once the request is held; `done` settles when it has been answered.
 */
export async function holdTheOnlySlot(fx: ContractFixtures, h: ClientGate): Promise<{ release: () => void; done: Promise<unknown> }> {
  let release!: () => void;
  const hold = new Promise<void>((resolve) => (release = resolve));
  h.up.reply = (seen) => (seen.url === '/hold' ? { status: 200, body: 'held', hold } : echo(seen));
  const holder = clientOf(fx, h.url);
  await holder.getToken();
  const done = holder.request('/hold').finally(() => holder.close());
  await vi.waitFor(() => expect(h.up.seen.map((s) => s.url)).toContain('/hold'), { timeout: 10_000 });
  return { release, done };
}

/** What `p` rejects with; a resolution fails the test. */
export function caught(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

/** One SDK suite's fixtures, shared gate, and the clients and gates its tests open. */
export interface ClientSuite {
  readonly fx: ContractFixtures;
  /** The file's shared gate, reset before each test; tests needing other settings use gateWith. */
  readonly g: ClientGate;
  /** A client (default on the shared gate), closed after the test. */
  client(opts?: Partial<GateClientOptions>, on?: { url: string }): GateClient;
  /** Another gate for this test (closed after it). */
  gateWith(opts: ClientGateOptions): Promise<ClientGate>;
  /** Closes `x` after this test. */
  closeAfter<T extends { close(): Promise<void> }>(x: T): T;
}

/**
 * Registers an SDK suite's life cycle in the calling file: contract fixtures and one gate
 * (`gateOpts`) for the file, the gate reset before each test, real timers restored and every
 * client and extra gate closed after each.
 */
export function clientSuite(gateOpts: ClientGateOptions = {}): ClientSuite {
  let fx: ContractFixtures | undefined;
  let g: ClientGate | undefined;
  const clients: GateClient[] = [];
  const extra: { close(): Promise<void> }[] = [];
  beforeAll(async () => {
    fx = await makeContractFixtures();
    g = await startClientGate(fx, gateOpts);
  });
  afterAll(async () => {
    const dir = fx?.dir;
    await closeAll([async () => g?.close(), () => (dir ? rmSync(dir, { recursive: true, force: true }) : undefined)]);
  });
  beforeEach(() => g!.reset());
  afterEach(async () => {
    vi.useRealTimers();
    // Every close runs even if one throws (a skipped one would outlive the file: isolate: false).
    const settled = [
      ...(await Promise.allSettled(clients.splice(0).map((c) => c.close()))),
      ...(await Promise.allSettled(extra.splice(0).map((x) => x.close()))),
    ];
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  });
  return {
    get fx() {
      return fx!;
    },
    get g() {
      return g!;
    },
    client(opts = {}, on = g!) {
      const c = clientOf(fx!, on.url, opts);
      clients.push(c);
      return c;
    },
    async gateWith(opts) {
      const h = await startClientGate(fx!, opts);
      extra.push(h);
      return h;
    },
    closeAfter(x) {
      extra.push(x);
      return x;
    },
  };
}

/** A GateClient of `who` (default the P-256 agent) for `h`, trusting the fixture CA. */
export function clientOf(fx: ContractFixtures, url: string, extra: Partial<GateClientOptions> = {}, who: KeyAndCert = fx.agents.p256): GateClient {
  return new GateClient({ baseUrl: url, cert: who.certPem, key: who.keyPem, ca: fx.ca.certPem, ...extra });
}

/**
 * The gate as an embedded plugin on a host's own fastify server whose `onRequest` hook (ahead
 * of the gate's) may answer first: a host's own load shedding, which, unlike the gate's
 * refusals, may come without Retry-After.
 */
export async function startEmbeddedGate(
  fx: ContractFixtures,
  hostHook: (url: string) => { status: number; body: string } | undefined,
): Promise<{ url: string; calls: { challenge: number }; close(): Promise<void> }> {
  const { config, violations } = loadConfig(testEnv(fx, { ...contractEnv(fx), GATE_STORE: 'memory' }), { embedded: true });
  if (!config || violations.length > 0) throw new Error(violations.map(formatViolation).join('\n'));
  const app = Fastify({ https: { key: readFileSync(fx.serverKeyFile), cert: readFileSync(fx.serverCertFile), ca: fx.ca.certPem, requestCert: true, rejectUnauthorized: false } });
  const calls = { challenge: 0 };
  app.addHook('onRequest', async (request, reply) => {
    if (request.url.startsWith(`${P}/v1/challenge`)) calls.challenge++;
    const answer = hostHook(request.url);
    if (answer) return reply.code(answer.status).type('text/plain').send(answer.body);
  });
  await app.register(agentGate, { config, deps: { warn: () => {} } });
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { url: `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`, calls, close: () => app.close() };
}

/** What an impostor answers: status, headers, body. */
export interface ImpostorReply {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

/**
 * Not a gate: an HTTPS server with the gate's certificate that answers every request from
 * `answer`, for the one kind of case the real gate cannot produce by design: answers off the
 * contract on the gate's own endpoints (HTML, a 2 MiB body, redirects), as a misrouted load
 * balancer or a captive portal at the gate's address would give. `hits` counts requests per path.
 */
export async function startImpostor(fx: ContractFixtures, answer: (path: string, n: number) => ImpostorReply): Promise<{ url: string; hits: Map<string, number>; close(): Promise<void> }> {
  const hits = new Map<string, number>();
  const server: Server = createServer({ cert: readFileSync(fx.serverCertFile), key: readFileSync(fx.serverKeyFile), ca: fx.ca.certPem, requestCert: true }, (req, res) => {
    req.resume();
    req.on('end', () => {
      const path = req.url ?? '/';
      const n = (hits.get(path) ?? 0) + 1;
      hits.set(path, n);
      const r = answer(path, n);
      res.writeHead(r.status, r.headers ?? {}).end(r.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
