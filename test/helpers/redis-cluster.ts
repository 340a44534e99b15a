/**
 * A real Redis Cluster for tests: 3 masters with one replica each, six `redis-server`
 * processes on loopback, joined with `redis-cli --cluster create`. A short
 * `cluster-node-timeout` makes a killed master's replica take over within a few seconds.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from './ports.js';

/** A running cluster. */
export interface RedisCluster {
  /** Seed nodes, `127.0.0.1:port`, for GATE_REDIS_CLUSTER_NODES. */
  nodes: string[];
  /** The client ports of all six nodes. */
  ports: number[];
  /** SIGKILLs the node on `port` and waits for it to exit. */
  kill(port: number): Promise<void>;
  /** Ports of the masters that serve slots, as a live node sees them (failed nodes excluded). */
  masters(): Promise<number[]>;
  /** Kills every node and removes their directories. Idempotent. */
  stop(): Promise<void>;
}

const NODES = 6;
const HOST = '127.0.0.1';
/** Node timeout (ms): failure detection and replica promotion take about 2-3 of these. */
const NODE_TIMEOUT_MS = 1000;
/**
 * Client ports come from here; bus ports (port + 10000) then lie in 25000-31999, both below
 * Linux's default ephemeral range (32768+), so outgoing connections cannot take them.
 */
const PORT_MIN = 15_000;
const PORT_MAX = 21_999;

/** Children of every cluster started by this process, killed when it exits. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const p of live) p.kill('SIGKILL');
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.unref();
    s.once('error', () => resolve(false));
    s.listen(port, HOST, () => s.close(() => resolve(true)));
  });
}

/** A port whose bus port (+10000) is free as well, not in `taken`. */
async function freeClusterPort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = PORT_MIN + Math.floor(Math.random() * (PORT_MAX - PORT_MIN + 1));
    if (taken.has(port)) continue;
    if ((await portFree(port)) && (await portFree(port + 10_000))) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no free port pair (port, port + 10000) for a cluster node');
}

function encode(args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
}

/**
 * One command over a fresh connection; resolves to the reply as text (simple string, error
 * prefixed with `-`, or bulk string). Rejects on connection errors and after `timeoutMs`.
 */
export function redisCommand(port: number, args: string[], timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, HOST);
    let buf = Buffer.alloc(0);
    const finish = (err: Error | undefined, value?: string) => {
      s.destroy();
      if (err) reject(err);
      else resolve(value ?? '');
    };
    s.setTimeout(timeoutMs, () => finish(new Error(`redis ${port}: ${args[0]} timed out`)));
    s.on('connect', () => s.write(encode(args)));
    s.on('error', (err) => finish(err));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const eol = buf.indexOf('\r\n');
      if (eol === -1) return;
      const head = buf.subarray(0, eol).toString();
      if (head[0] === '+' || head[0] === '-' || head[0] === ':') return finish(undefined, head[0] === '+' ? head.slice(1) : head);
      if (head[0] === '$') {
        const len = Number(head.slice(1));
        if (len < 0) return finish(undefined, '');
        if (buf.length >= eol + 2 + len + 2) finish(undefined, buf.subarray(eol + 2, eol + 2 + len).toString());
        return;
      }
      finish(new Error(`redis ${port}: unexpected reply ${head}`));
    });
  });
}

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim();
}

interface Node {
  port: number;
  dir: string;
  proc?: ChildProcess;
}

/** Spawns one cluster-enabled redis-server; resolves when it answers PING, rejects if it exits. */
async function spawnNode(node: Node): Promise<void> {
  mkdirSync(node.dir, { recursive: true });
  const proc = spawn(
    'redis-server',
    [
      '--port', String(node.port),
      '--bind', HOST,
      '--protected-mode', 'yes',
      '--cluster-enabled', 'yes',
      '--cluster-config-file', join(node.dir, 'nodes.conf'),
      '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
      // Promote the replica whatever its replication lag (a test cluster, not a data store).
      '--cluster-replica-validity-factor', '0',
      '--dir', node.dir,
      '--save', '',
      // Replicas sync at once (the default waits 5 s for more replicas to share one transfer).
      '--repl-diskless-sync', 'yes',
      '--repl-diskless-sync-delay', '0',
      '--appendonly', 'no',
      '--logfile', join(node.dir, 'redis.log'),
    ],
    { stdio: 'ignore' },
  );
  node.proc = proc;
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  let exited = false;
  proc.once('exit', () => {
    exited = true;
  });
  await waitFor(
    async () => {
      if (exited) throw new Error('exited');
      return (await redisCommand(node.port, ['PING'], 500)) === 'PONG';
    },
    10_000,
    `cluster node on port ${node.port}`,
  ).catch((err: unknown) => {
    if (exited) throw new Error(`redis-server on port ${node.port} exited at start (see ${join(node.dir, 'redis.log')})`);
    throw err;
  });
  if (exited) throw new Error(`redis-server on port ${node.port} exited at start`);
}

async function killNode(node: Node): Promise<void> {
  const p = node.proc;
  node.proc = undefined;
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    p.once('exit', () => resolve());
    p.kill('SIGKILL');
  });
}

function runCli(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.slice(0, 2).join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Starts six nodes, creates the cluster (3 masters, 1 replica each) and waits until it is healthy. */
export async function startRedisCluster(): Promise<RedisCluster> {
  installExitHook();
  const root = mkdtempSync(join(tmpdir(), 'agent-gate-cluster-'));
  const nodes: Node[] = [];
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await Promise.all(nodes.map(killNode));
    rmSync(root, { recursive: true, force: true });
  };
  try {
    const taken = new Set<number>();
    // Another process may grab a port between the check and the bind: retry with a new one.
    for (let i = 0; i < NODES; i++) {
      for (let attempt = 0; ; attempt++) {
        const port = await freeClusterPort(taken);
        const node: Node = { port, dir: join(root, String(port)) };
        try {
          await spawnNode(node);
          nodes.push(node);
          break;
        } catch (err) {
          await killNode(node);
          if (attempt >= 3) throw err;
        }
      }
    }
    const ports = nodes.map((n) => n.port);
    await runCli(['--cluster', 'create', ...ports.map((p) => `${HOST}:${p}`), '--cluster-replicas', '1', '--cluster-yes'], 30_000);

    // Healthy: every node sees all six, all slots ok, and every replica is in sync with its
    // master (so that a failover has a replica to promote).
    await waitFor(
      async () => {
        for (const port of ports) {
          const info = await redisCommand(port, ['CLUSTER', 'INFO']);
          if (infoField(info, 'cluster_state') !== 'ok') return false;
          if (infoField(info, 'cluster_slots_ok') !== '16384') return false;
          if (infoField(info, 'cluster_known_nodes') !== String(NODES)) return false;
          const repl = await redisCommand(port, ['INFO', 'replication']);
          const role = infoField(repl, 'role');
          if (role === 'slave' && infoField(repl, 'master_link_status') !== 'up') return false;
          if (role === 'master' && infoField(repl, 'connected_slaves') !== '1') return false;
        }
        return true;
      },
      20_000,
      'redis cluster_state:ok on all nodes',
      100,
    );

    const byPort = new Map(nodes.map((n) => [n.port, n]));
    return {
      nodes: ports.map((p) => `${HOST}:${p}`),
      ports,
      kill: async (port) => {
        const n = byPort.get(port);
        if (!n) throw new Error(`no cluster node on port ${port}`);
        await killNode(n);
      },
      masters: async () => {
        let lastErr: unknown;
        for (const n of nodes) {
          if (!n.proc) continue;
          try {
            const text = await redisCommand(n.port, ['CLUSTER', 'NODES']);
            const out: number[] = [];
            for (const line of text.split('\n')) {
              const f = line.trim().split(' ');
              if (f.length < 8) continue;
              const flags = f[2]!.split(',');
              if (!flags.includes('master') || flags.includes('fail') || flags.includes('fail?')) continue;
              if (f.length < 9) continue; // a master without slots
              out.push(Number(f[1]!.split('@')[0]!.split(':').pop()));
            }
            return out.sort((a, b) => a - b);
          } catch (err) {
            lastErr = err;
          }
        }
        throw new Error('no live cluster node answers CLUSTER NODES', { cause: lastErr });
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
