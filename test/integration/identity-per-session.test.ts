/**
 * Identity once per agent, not per connection (issue 16): a returning agent's new mTLS
 * connection, full handshake or resumed session, is recognised from its leaf alone; the chain
 * is read and parsed (getPeerCertificate(true), X509Certificate per link) only the first time
 * a leaf is seen, so reconnecting agents cost a hash instead of ~20x more.
 */
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyAndCert } from '../../src/pki/index.js';
import { makeFixtures, type Fixtures } from '../helpers/fixtures.js';
import { startGate, testEnv, type RunningGate } from '../helpers/gate.js';

let fx: Fixtures;
let gw: RunningGate;

beforeAll(async () => {
  fx = await makeFixtures();
  gw = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: 'http://127.0.0.1:9' }));
}, 90_000);

afterAll(async () => {
  await gw?.close();
});

/** POST P/v1/challenge on a new connection (optionally resuming `session`). */
function challenge(who: KeyAndCert, session?: Buffer): Promise<{ status: number; reused: boolean; session: Buffer | undefined }> {
  const u = new URL(gw.url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port), ca: fx.ca.certPem, cert: who.certPem, key: who.keyPem, servername: 'localhost', ...(session ? { session } : {}) });
    const chunks: Buffer[] = [];
    let ticket: Buffer | undefined;
    let reused = false;
    s.setTimeout(20_000, () => s.destroy(new Error('timed out')));
    s.on('session', (t: Buffer) => (ticket = t));
    s.on('secureConnect', () => {
      reused = s.isSessionReused();
      s.write('POST /.agent-gate/v1/challenge HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => resolve({ status: Number(Buffer.concat(chunks).toString('utf8').split(' ')[1]), reused, session: ticket }));
  });
}

describe('identity once per agent (direct mode)', () => {
  it('the first connection of an agent reads its chain; its later connections, new or resumed, read none', async () => {
    const stats = gw.gate.services.identity.direct!.stats;
    const before = stats.chainReads;
    const first = await challenge(fx.agents.p256);
    expect(first.status).toBe(201);
    expect(stats.chainReads).toBe(before + 1);
    for (let i = 0; i < 3; i++) expect((await challenge(fx.agents.p256)).status).toBe(201);
    const resumed = await challenge(fx.agents.p256, first.session);
    expect(resumed).toMatchObject({ status: 201, reused: true });
    expect(stats.chainReads).toBe(before + 1);
    // Another agent is another leaf: its chain is read once too.
    expect((await challenge(fx.agents.ed25519)).status).toBe(201);
    expect((await challenge(fx.agents.ed25519)).status).toBe(201);
    expect(stats.chainReads).toBe(before + 2);
  });

  it('an expired certificate, refused by OpenSSL in the handshake, costs no chain read on any connection', async () => {
    const stats = gw.gate.services.identity.direct!.stats;
    const before = stats.chainReads;
    for (let i = 0; i < 2; i++) expect((await challenge(fx.agents.expired)).status).toBe(403);
    expect(stats.chainReads).toBe(before);
  });
});
