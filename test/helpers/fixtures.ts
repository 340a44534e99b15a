import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, issueAgentCert, issueServerCert, type KeyAndCert } from '../../src/pki/index.js';

/** Certificates for one test file: a trusted CA, the gate's server cert and several agents. */
export interface Fixtures {
  dir: string;
  ca: KeyAndCert;
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  agents: {
    ed25519: KeyAndCert;
    p256: KeyAndCert;
    rsa: KeyAndCert;
    /** A second P-256 agent, for binding tests. */
    other: KeyAndCert;
    /** Issued by a CA the gate does not trust. */
    foreign: KeyAndCert;
    /** Validity ended an hour ago. */
    expired: KeyAndCert;
  };
}

/** Builds the fixture PKI in a fresh temp dir (about a second, RSA dominating). */
export async function makeFixtures(): Promise<Fixtures> {
  const dir = mkdtempSync(join(tmpdir(), 'agent-gate-test-'));
  const ca = await createCa({ alg: 'ec-p256', commonName: 'agent-gate test CA' });
  const server = await issueServerCert(ca);
  const foreignCa = await createCa({ alg: 'ec-p256', commonName: 'untrusted CA' });
  const hour = 3600_000;
  const [ed25519, p256, rsa, other, foreign, expired] = await Promise.all([
    issueAgentCert(ca, 'ed', { alg: 'ed25519' }),
    issueAgentCert(ca, 'p256', { alg: 'ec-p256' }),
    issueAgentCert(ca, 'rsa', { alg: 'rsa-2048' }),
    issueAgentCert(ca, 'other', { alg: 'ec-p256' }),
    issueAgentCert(foreignCa, 'foreign', { alg: 'ec-p256' }),
    issueAgentCert(ca, 'expired', { alg: 'ec-p256', notBefore: new Date(Date.now() - 48 * hour), notAfter: new Date(Date.now() - hour) }),
  ]);
  const caFile = join(dir, 'ca.crt');
  const serverCertFile = join(dir, 'server.crt');
  const serverKeyFile = join(dir, 'server.key');
  writeFileSync(caFile, ca.certPem);
  writeFileSync(serverCertFile, server.certPem);
  writeFileSync(serverKeyFile, server.keyPem, { mode: 0o600 });
  return { dir, ca, caFile, serverCertFile, serverKeyFile, agents: { ed25519: ed25519!, p256: p256!, rsa: rsa!, other: other!, foreign: foreign!, expired: expired! } };
}
