/**
 * The SDK's TLS connector (src/client/connector.ts) resumes with the newest session also after
 * a garbage collection, on TLS 1.3 and on TLS 1.2, where undici's own weakly held cache loses
 * it (the negative control, so the test can tell the two apart).
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { buildConnector } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sessionKeepingConnector } from '../../src/client/connector.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { collectGarbage } from '../helpers/gc.js';

let fx: Fixtures;
const servers: Record<'TLSv1.2' | 'TLSv1.3', Server> = {} as never;

beforeAll(async () => {
  fx = await makeFixtures();
  for (const version of ['TLSv1.2', 'TLSv1.3'] as const) {
    const server = createServer({ cert: readFileSync(fx.serverCertFile), key: readFileSync(fx.serverKeyFile), minVersion: version, maxVersion: version }, (socket) => socket.end('hi'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    servers[version] = server;
  }
});

afterAll(async () => {
  for (const server of Object.values(servers)) await new Promise((resolve) => server.close(resolve));
});

/** One connection through `connect` to the `version` server, read to its end: whether it resumed. */
async function once(connect: buildConnector.connector, version: 'TLSv1.2' | 'TLSv1.3', servername = 'localhost'): Promise<boolean> {
  const port = (servers[version].address() as AddressInfo).port;
  const socket = await new Promise<TLSSocket>((resolve, reject) =>
    connect({ hostname: '127.0.0.1', host: `127.0.0.1:${port}`, protocol: 'https:', port: String(port), servername }, (err, s) => (err ? reject(err) : resolve(s as TLSSocket))),
  );
  expect(socket.getProtocol()).toBe(version);
  const reused = socket.isSessionReused();
  // TLS 1.3 tickets come after the handshake: the whole answer, then the session is in.
  await new Promise<void>((resolve) => socket.on('data', () => {}).once('close', () => resolve()));
  return reused;
}

const tls = () => ({ ca: fx.ca.certPem, rejectUnauthorized: true });

describe.each(['TLSv1.3', 'TLSv1.2'] as const)('%s', (version) => {
  it('the SDK connector resumes with its newest session after a garbage collection', async () => {
    const connect = sessionKeepingConnector(tls());
    expect(await once(connect, version)).toBe(false);
    await collectGarbage();
    expect(await once(connect, version)).toBe(true);
    expect(await once(connect, version)).toBe(true);
  });

  it('remembers no session from a connection that failed the server check (a pin mismatch), so every connection runs it', async () => {
    let checks = 0;
    const connect = sessionKeepingConnector({
      ...tls(),
      checkServerIdentity: () => {
        checks++;
        return new Error('pin mismatch');
      },
    });
    for (let i = 0; i < 3; i++) await expect(once(connect, version)).rejects.toThrow('pin mismatch');
    expect(checks).toBe(3);
  });

  it('keeps sessions by server name: a session never resumes for another name, which is checked afresh', async () => {
    const connect = sessionKeepingConnector(tls());
    expect(await once(connect, version)).toBe(false);
    expect(await once(connect, version)).toBe(true);
    // The server's certificate does not name evil.example: a full handshake, and its check fails.
    await expect(once(connect, version, 'evil.example')).rejects.toThrow(/does not match|altnames/i);
    expect(await once(connect, version)).toBe(true);
  });

  it("undici's own cache (negative control) loses the session to a garbage collection", async () => {
    const connect = buildConnector(tls());
    expect(await once(connect, version)).toBe(false);
    expect(await once(connect, version)).toBe(true);
    await collectGarbage();
    expect(await once(connect, version)).toBe(false);
  });
});
