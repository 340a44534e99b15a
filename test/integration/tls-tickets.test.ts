/**
 * deploy/node-openssl.cnf, the OpenSSL configuration the image gives the gate (OPENSSL_CONF):
 * a real `agent-gate serve` process sends one TLS 1.3 session ticket per full handshake with it
 * and OpenSSL's default two without it, and the one ticket resumes, also more than once (a
 * client that uses each ticket only once resumes half as often: HARDENING.md).
 */
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { connect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { generateSigningJwk } from '../../src/tokens/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { testEnv } from '../helpers/gate.js';
import { spawnServe, type ServeProcess } from '../helpers/serve.js';

const CONF = fileURLToPath(new URL('../../deploy/node-openssl.cnf', import.meta.url));

let fx: Fixtures;
let withConf: ServeProcess;
let withoutConf: ServeProcess;
let missingConf: ServeProcess;
let missingConfWorkers: ServeProcess;

/** Every gate that started, also when another failed to: all are stopped after the file. */
const started: ServeProcess[] = [];
async function serve(env: Record<string, string>): Promise<ServeProcess> {
  const gate = await spawnServe(env);
  started.push(gate);
  return gate;
}

beforeAll(async () => {
  fx = await makeFixtures();
  // The upstream is never asked: the connections below ask the gate's own health endpoint.
  const env = (conf: string) => testEnv(fx, { GATE_UPSTREAM_URL: 'http://127.0.0.1:9', OPENSSL_CONF: conf });
  [withConf, withoutConf, missingConf, missingConfWorkers] = await Promise.all([
    serve(env(CONF)),
    // An empty configuration: OpenSSL's defaults (what a gate outside the image gets from a
    // system openssl.cnf without a nodejs_conf section).
    serve(env('/dev/null')),
    // Node ignores a missing file; the gate says so.
    serve(env('/nonexistent/node-openssl.cnf')),
    // Workers run `serve` too: still one warning per gate.
    serve({
      ...env('/nonexistent/node-openssl.cnf'),
      GATE_WORKERS: '2',
      GATE_STORE: 'redis',
      GATE_REDIS_URL: inject('redisUrl'),
      GATE_SIGNING_JWK: JSON.stringify(await generateSigningJwk()),
    }),
  ]);
}, 60_000);

afterAll(async () => {
  await Promise.all(started.map((gate) => gate.stop()));
});

/** One mTLS connection with one request, optionally resuming `session`: the tickets it was sent and whether it resumed. */
async function connection(gate: ServeProcess, session?: Buffer): Promise<{ tickets: Buffer[]; reused: boolean; status: string }> {
  const url = new URL(gate.url);
  const socket: TLSSocket = connect({ host: url.hostname, port: Number(url.port), servername: 'localhost', ca: fx.ca.certPem, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, session });
  const tickets: Buffer[] = [];
  socket.on('session', (s: Buffer) => tickets.push(s));
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  expect(socket.getProtocol()).toBe('TLSv1.3');
  const reused = socket.isSessionReused();
  socket.write('GET /.agent-gate/healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
  let answer = '';
  socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
  // Tickets come right after the handshake, before any answer: all are in once the gate closes.
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { tickets, reused, status: answer.slice(0, answer.indexOf('\r\n')) };
}

it('deploy/node-openssl.cnf holds the ticket count and nothing else (no providers, engines or other TLS settings)', () => {
  // Every setting here applies to every TLS context of the gate, over what the gate sets in
  // code where OpenSSL lets it; a config file can also load shared objects. So the whole file is pinned.
  const sections: Record<string, Record<string, string>> = { '': {} };
  let current = '';
  for (const raw of readFileSync(CONF, 'utf8').split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') continue;
    const section = /^\[\s*(\S+)\s*\]$/.exec(line);
    if (section) {
      current = section[1]!;
      sections[current] = {};
      continue;
    }
    const kv = /^([^=\s]+)\s*=\s*(.*)$/.exec(line);
    expect(kv, `a key = value line: ${line}`).not.toBeNull();
    sections[current]![kv![1]!] = kv![2]!;
  }
  expect(sections).toEqual({
    '': { nodejs_conf: 'agent_gate_node' },
    agent_gate_node: { ssl_conf: 'agent_gate_ssl' },
    agent_gate_ssl: { system_default: 'agent_gate_tls_defaults' },
    agent_gate_tls_defaults: { NumTickets: '1' },
  });
});

it('with deploy/node-openssl.cnf a full handshake is sent one ticket; without it, two', async () => {
  const one = await connection(withConf);
  const two = await connection(withoutConf);
  expect(one.reused).toBe(false);
  expect(two.reused).toBe(false);
  // The gate answered the request on both connections (the handshake was a whole mTLS one).
  expect(one.status).toBe('HTTP/1.1 200 OK');
  expect(two.status).toBe('HTTP/1.1 200 OK');
  expect(one.tickets).toHaveLength(1);
  expect(two.tickets).toHaveLength(2);
});

it('the one ticket resumes, more than once; a resumed handshake is sent no new ticket, with the file or without', async () => {
  for (const gate of [withConf, withoutConf]) {
    const first = await connection(gate);
    for (let i = 0; i < 3; i++) {
      const again = await connection(gate, first.tickets[0]);
      expect(again.reused, `resumption ${i + 1}`).toBe(true);
      expect(again.status).toBe('HTTP/1.1 200 OK');
      // As observed on Node 20 with OpenSSL 3.0: resumption then rests on the gate accepting a ticket again.
      expect(again.tickets).toHaveLength(0);
    }
  }
});

it('an OPENSSL_CONF that cannot be read gets one warning line at start (Node would ignore it silently); a readable one none', async () => {
  expect(missingConf.output()).toContain('agent-gate: OPENSSL_CONF=/nonexistent/node-openssl.cnf cannot be read (ENOENT)');
  const two = await connection(missingConf);
  expect(two.status).toBe('HTTP/1.1 200 OK');
  expect(two.tickets).toHaveLength(2);
  for (const gate of [withConf, withoutConf]) expect(gate.output()).not.toContain('OPENSSL_CONF');
  expect(missingConfWorkers.output().split('\n').filter((l) => l.includes('OPENSSL_CONF='))).toHaveLength(1);
});

it('a directory as OPENSSL_CONF is warned about too (Node ignores it as silently)', async () => {
  const { opensslConfWarning } = await import('../../src/cli/gate.js');
  expect(opensslConfWarning({ OPENSSL_CONF: '/tmp' })).toMatch(/OPENSSL_CONF=\/tmp cannot be read \(a directory\)/);
  expect(opensslConfWarning({ OPENSSL_CONF: CONF })).toBeUndefined();
  expect(opensslConfWarning({})).toBeUndefined();
});
