/**
 * Connection lifecycle of the public listener: caps on open connections (per client address
 * and in total) enforced at accept time, before any TLS work, and the Node server options that
 * bound how long a connection may take to finish its handshake, send its headers, or idle
 * between requests (PROTOCOL.md section 12, `GATE_HANDSHAKE_TIMEOUT_MS` and friends).
 * @module
 */
import type { Server, Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import type { GateMetrics } from '../metrics/index.js';
import { addressKey } from '../lib/address.js';

/**
 * Most header lines a request may carry: Node drops the lines past its `maxHeadersCount`
 * without a word (and the gate would then act on a request it never fully saw: a
 * `Content-Length` or a `Connection` option past the cap), so the server keeps one more and the
 * edge refuses a request over the cap. Behind nginx, room for the signed headers it adds.
 */
export function maxHeaderLines(mode: 'direct' | 'forwarded' | 'authorizer'): number {
  return mode === 'direct' ? 100 : 128;
}

/** Default of `GATE_MAX_CONNECTIONS_PER_ADDRESS`, and of nginx-config's `limit_conn` per client address. */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 128;

/** The bounds of one listener's connections. */
export interface ConnectionLimits {
  /** TCP accept to completed TLS handshake, in ms (`GATE_HANDSHAKE_TIMEOUT_MS`). */
  handshakeTimeoutMs: number;
  /** Start of a request (or of the connection) to its last header byte, in ms (`GATE_HEADERS_TIMEOUT_MS`). */
  headersTimeoutMs: number;
  /** A whole request, headers and body, in ms (fixed at 30 s; at least the headers timeout). */
  requestTimeoutMs: number;
  /** Keep-alive idle time between requests, in ms (`GATE_IDLE_TIMEOUT_MS`). */
  idleTimeoutMs: number;
  /** Open connections of the listener (`GATE_MAX_CONNECTIONS`). */
  maxConnections: number;
  /** Open connections from one client address, 0 for no such cap (`GATE_MAX_CONNECTIONS_PER_ADDRESS`). */
  maxConnectionsPerAddress: number;
}

/** Which cap refused a connection (the `limit` label of `connections_refused_total`). */
export type ConnectionLimit = 'per_address' | 'total';

/** What a guard reports. */
export interface ConnectionEvents {
  /** A connection was closed at accept because of `limit`. */
  refused(limit: ConnectionLimit, address: string): void;
  /** The number of open connections changed. */
  open?(open: number): void;
}

/** Live view of a guarded listener. */
export interface ConnectionGuard {
  /** Connections open now. */
  readonly open: number;
  /** Distinct client addresses (IPv6: /64 prefixes) with a connection open now. */
  readonly addresses: number;
  /** Connections open now from the address (or /64) of `address`. */
  openFrom(address: string): number;
  /** Destroys every connection that has not completed its TLS handshake (shutdown). */
  destroyPending(): void;
}

/**
 * Node's server options for `limits`: Node checks the header and request timeouts only every
 * `connectionsCheckingInterval` (30 s by default, which is why a 10 s header timeout cut header
 * dribbling at about 30 s), so the interval is a tenth of the header timeout, at most 1 s.
 */
export function serverTimeoutOptions(limits: ConnectionLimits, tls: boolean) {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.idleTimeoutMs,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeoutMs / 10))),
    ...(tls ? { handshakeTimeout: limits.handshakeTimeoutMs } : {}),
  };
}

function tupleKey(s: { localAddress?: string; localPort?: number; remoteAddress?: string; remotePort?: number }): string {
  return `${s.localAddress}|${s.localPort}|${s.remoteAddress}|${s.remotePort}`;
}

/**
 * Puts the caps of `limits` in front of `server`'s own connection handling. Must be called
 * before the server accepts anything: the listeners the server registered for its accepted
 * sockets (for an https server, the one that starts TLS) run only for admitted sockets, so an
 * over-cap connection is reset before any TLS or HTTP object exists for it. Per-address counts
 * live in a map holding only addresses with an open connection (at most `maxConnections`).
 */
export function guardConnections(server: Server, limits: ConnectionLimits, events: ConnectionEvents): ConnectionGuard {
  const perAddress = new Map<string, number>();
  // Sockets of a TLS listener between accept and the end of their handshake, by 4-tuple.
  const pending = new Map<string, Socket>();
  const tls = server instanceof TlsServer;
  let open = 0;
  const inner = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const key = addressKey(socket.remoteAddress);
    const fromAddress = perAddress.get(key) ?? 0;
    let refused: ConnectionLimit | undefined;
    if (open >= limits.maxConnections) refused = 'total';
    else if (limits.maxConnectionsPerAddress > 0 && fromAddress >= limits.maxConnectionsPerAddress) refused = 'per_address';
    if (refused) {
      // A reset, not a FIN: nothing to flush, and the gate keeps no TIME_WAIT state for it.
      socket.resetAndDestroy();
      events.refused(refused, key);
      return;
    }
    open++;
    events.open?.(open);
    perAddress.set(key, fromAddress + 1);
    const tuple = tls ? tupleKey(socket) : '';
    if (tls) pending.set(tuple, socket);
    socket.once('close', () => {
      open--;
      events.open?.(open);
      const n = (perAddress.get(key) ?? 1) - 1;
      if (n <= 0) perAddress.delete(key);
      else perAddress.set(key, n);
      if (tls) pending.delete(tuple);
    });
    for (const listener of inner) listener.call(server, socket);
  });
  if (tls) server.on('secureConnection', (s: Socket) => pending.delete(tupleKey(s)));
  return {
    get open() {
      return open;
    },
    get addresses() {
      return perAddress.size;
    },
    openFrom: (address) => perAddress.get(addressKey(address)) ?? 0,
    destroyPending() {
      for (const s of pending.values()) s.destroy();
      pending.clear();
    },
  };
}

/** Where {@link installConnectionLimits} reports. */
export interface ConnectionSinks {
  metrics: GateMetrics;
  log: () => { warn(o: object, msg: string): void } | undefined;
}

/** How often at most a cap that keeps refusing is logged (one line with the count since the last). */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/**
 * {@link guardConnections} with the gate's metrics (`connections_refused_total{limit}`,
 * `open_connections`) and log lines: a flood of refused connections is one warning per cap
 * every 10 s, not one line per connection.
 */
export function installConnectionLimits(server: Server, limits: ConnectionLimits, sinks: ConnectionSinks): ConnectionGuard {
  const lastLog: Record<ConnectionLimit, { at: number; count: number }> = { per_address: { at: 0, count: 0 }, total: { at: 0, count: 0 } };
  const guard = guardConnections(server, limits, {
    refused(limit, address) {
      sinks.metrics.connectionsRefused.inc({ limit });
      const l = lastLog[limit];
      l.count++;
      const now = Date.now();
      if (now - l.at < REFUSAL_LOG_INTERVAL_MS) return;
      const cap = limit === 'total' ? limits.maxConnections : limits.maxConnectionsPerAddress;
      sinks.log()?.warn({ event: 'connections.refused', limit, cap, refused: l.count, address: limit === 'per_address' ? address : undefined }, 'connection cap reached: connections reset at accept');
      l.at = now;
      l.count = 0;
    },
    open: (n) => sinks.metrics.openConnections.set(n),
  });
  return guard;
}
