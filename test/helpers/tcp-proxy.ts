import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * What the proxy does with traffic, switchable at runtime:
 * - `pass`: forwards bytes both ways as they come;
 * - `delay`: forwards every chunk, in order, `delayMs` after it arrived (both directions);
 * - `drop`: a black hole: accepts connections and reads, but forwards and answers nothing. Like
 *   a network partition under TCP, bytes are held, not lost: when the mode leaves `drop` the
 *   held bytes are delivered in order (losing bytes inside a live TCP stream cannot happen on
 *   a real network, and would desynchronise any request/reply protocol for good);
 * - `reset`: destroys every open connection with a TCP RST, and every new one on accept.
 */
export type ProxyMode = 'pass' | 'delay' | 'drop' | 'reset';

/** A loopback TCP proxy in front of `target`. */
export interface TcpProxy {
  port: number;
  /** `redis://127.0.0.1:<port>` style convenience: `host:port` of the proxy. */
  address: string;
  /** The current mode; assigning switches it (`reset` also cuts open connections at once). */
  mode: ProxyMode;
  /** Per-chunk delay in `delay` mode. */
  delayMs: number;
  /** Connections accepted so far (including reset ones). */
  readonly accepted: number;
  /** Connections currently open. */
  readonly open: number;
  close(): Promise<void>;
}

interface Queued {
  chunk: Buffer;
  /** When to deliver (ms since epoch); Infinity while held by `drop`. */
  due: number;
}

/** One direction of one connection: an ordered queue so delayed and held chunks keep their order. */
class Lane {
  private readonly queue: Queued[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly to: Socket) {}

  push(chunk: Buffer, due: number): void {
    if (due <= Date.now() && this.queue.length === 0) {
      this.write(chunk);
      return;
    }
    this.queue.push({ chunk, due });
    this.kick();
  }

  /** Held chunks become due now (leaving `drop`). */
  release(): void {
    const now = Date.now();
    for (const q of this.queue) if (q.due === Infinity) q.due = now;
    this.kick();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }

  private kick(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = Date.now();
    while (this.queue.length > 0 && this.queue[0]!.due <= now) this.write(this.queue.shift()!.chunk);
    const head = this.queue[0];
    if (head && head.due !== Infinity) this.timer = setTimeout(() => this.kick(), Math.max(1, head.due - now));
  }

  private write(chunk: Buffer): void {
    if (!this.to.destroyed) this.to.write(chunk);
  }
}

interface Pair {
  client: Socket;
  upstream: Socket;
  lanes: Lane[];
}

function reset(s: Socket): void {
  if (s.destroyed) return;
  // RST where the platform supports it, plain destroy otherwise.
  if (typeof s.resetAndDestroy === 'function' && s.readyState !== 'opening') s.resetAndDestroy();
  else s.destroy();
}

/** Starts the proxy on a random loopback port, forwarding to `target` (`host:port`). */
export async function startTcpProxy(target: { host?: string; port: number }): Promise<TcpProxy> {
  const host = target.host ?? '127.0.0.1';
  const pairs = new Set<Pair>();
  let mode: ProxyMode = 'pass';
  let accepted = 0;

  const dueFor = (): number => {
    switch (mode) {
      case 'delay':
        return Date.now() + proxy.delayMs;
      case 'drop':
        return Infinity;
      default:
        return Date.now();
    }
  };

  const server: Server = createServer((client) => {
    accepted++;
    client.on('error', () => {});
    if (mode === 'reset') {
      reset(client);
      return;
    }
    const upstream = connect(target.port, host);
    upstream.on('error', () => {});
    const toUpstream = new Lane(upstream);
    const toClient = new Lane(client);
    const pair: Pair = { client, upstream, lanes: [toUpstream, toClient] };
    pairs.add(pair);
    client.on('data', (d: Buffer) => toUpstream.push(d, dueFor()));
    upstream.on('data', (d: Buffer) => toClient.push(d, dueFor()));
    const end = () => {
      if (!pairs.delete(pair)) return;
      toUpstream.stop();
      toClient.stop();
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
  });

  const proxy: TcpProxy = {
    port: 0,
    address: '',
    delayMs: 0,
    get mode() {
      return mode;
    },
    set mode(m: ProxyMode) {
      const was = mode;
      mode = m;
      if (m === 'reset') {
        for (const p of pairs) {
          p.lanes.forEach((l) => l.stop());
          reset(p.client);
          reset(p.upstream);
        }
      } else if (was === 'drop' && m !== 'drop') {
        for (const p of pairs) p.lanes.forEach((l) => l.release());
      }
    },
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    close: async () => {
      for (const p of pairs) {
        p.lanes.forEach((l) => l.stop());
        p.client.destroy();
        p.upstream.destroy();
      }
      pairs.clear();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  proxy.port = typeof a === 'object' && a ? a.port : 0;
  proxy.address = `127.0.0.1:${proxy.port}`;
  return proxy;
}
