/**
 * Staging end to end without other software: the dev PKI's files, `pki`'s own OCSP responder,
 * and a gate checking revocation against it; a revocation in the CA database shows up.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { devPkiPaths, initDevPki, issueAgentFiles, revokeCertificate, startOcspResponder } from '../../src/pki/index.js';
import { startGate } from '../helpers/gate.js';
import { waitFor } from '../helpers/ports.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';

let dir: string;
let up: RecordingUpstream;
let responder: Awaited<ReturnType<typeof startOcspResponder>>;
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ag-own-ocsp-'));
  up = await startUpstream();
  await initDevPki(dir);
  responder = await startOcspResponder({ dir, nextUpdateS: 1 });
});
afterAll(async () => {
  for (const c of closers.reverse()) await c();
  await responder?.close();
  await up?.close();
});

it('good agent passes; after `pki revoke` its token stops working on the next gated request', async () => {
  const agent = await issueAgentFiles(dir, 'staging-agent', { ocspUrl: responder.url });
  const p = devPkiPaths(dir);
  const g = await startGate({
    GATE_ENV: 'dev',
    GATE_LISTEN: '127.0.0.1:0',
    GATE_ADMIN_LISTEN: '127.0.0.1:0',
    GATE_TLS_CERT: p.serverCert,
    GATE_TLS_KEY: p.serverKey,
    GATE_CLIENT_CA: p.caCert,
    GATE_UPSTREAM_URL: up.url,
    GATE_RATE_LIMITS: 'off',
    GATE_LOG_LEVEL: 'debug',
    // No GATE_OCSP_URL: the responder comes from the certificate's AIA extension.
    GATE_REVOCATION: 'ocsp',
    GATE_REVOCATION_FAIL: 'closed',
    GATE_REVOCATION_MAX_STALE_S: '1',
  });
  closers.push(() => g.close());
  const c = new GateClient({ baseUrl: g.url, cert: readFileSync(agent.cert), key: readFileSync(agent.key), ca: readFileSync(p.caCert), servername: 'localhost' });
  closers.push(() => c.close());
  expect((await c.request('/before')).status).toBe(200);
  const asked = responder.requests;
  expect(asked).toBeGreaterThanOrEqual(1);
  await revokeCertificate(dir, readFileSync(agent.cert, 'utf8'), { reason: 'keyCompromise' });
  await waitFor(async () => (await c.request('/after')).status === 403, 10_000, 'revocation to reach the gate');
  const r = await c.request('/after');
  expect((r.json() as { code: string }).code).toBe('client_cert_revoked');
});
