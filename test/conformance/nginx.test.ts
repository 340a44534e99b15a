/**
 * The nginx-fronted gate: a real nginx + njs (the configuration `agent-gate nginx-config`
 * renders) in front of the real gate in forwarded mode, against a real redis-server, held to
 * the contract of test/conformance/contract.ts; only the URL differs from direct mode. What
 * is particular to forwarded mode (spoofing, key rotation, reloads) is in
 * test/integration/nginx-gate.test.ts.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';
import { renderNginxConfig } from '../../src/nginx/index.js';
import { forwardedTestEnv, startGate } from '../helpers/gate.js';
import { freePort } from '../helpers/ports.js';
import { startUpstream } from '../helpers/upstream.js';
import { ensureNginx, relaxEdgeLimits, removeTempDirs, startNginx, tempDir, writeKeyFile } from '../nginx/harness.js';
import { contractEnv, denyViaAdmin, describeGateContract } from './contract.js';

let clockOffsetMs = 0;
/** Short enough that an expired token is within the forwarded headers' skew window (below). */
const TOKEN_TTL_S = 60;

describeGateContract('nginx', async (fx) => {
  ensureNginx();
  const up = await startUpstream();
  const key = writeKeyFile(tempDir('contract-keys'));
  const gw = await startGate(
    forwardedTestEnv(fx, up.url, inject('redisUrl'), {
      ...contractEnv(fx),
      GATE_FWD_HMAC_KEYS: `k1:${key.b64}`,
      // The clock cases move the gate's clock up to TTL + 100 s: nginx's timestamps stay valid.
      GATE_FWD_MAX_SKEW_S: '300',
      GATE_TOKEN_TTL_S: String(TOKEN_TTL_S),
    }),
    { now: () => Date.now() + clockOffsetMs },
  );
  const dir = join(tempDir('contract'), 'out');
  const port = await freePort();
  const out = await renderNginxConfig({
    listen: `127.0.0.1:${port}`,
    gateUrl: gw.url.replace('https://', 'http://'),
    tlsCert: fx.serverCertFile,
    tlsKey: fx.serverKeyFile,
    clientCa: fx.caFile,
    hmacKeyFile: key.file,
    kid: 'k1',
    dir,
  });
  if (out.warnings.length > 0) throw new Error(out.warnings.join('\n'));
  writeFileSync(out.confPath, relaxEdgeLimits(readFileSync(out.confPath, 'utf8')));
  const nginx = await startNginx(dir, port);
  return {
    url: nginx.url,
    gatedPath: '/api/things',
    seen: () => {
      const h = up.seen.at(-1)!.headers;
      return { agentId: h['x-agent-id'], thumbprint: h['x-agent-thumbprint'], tokenId: h['x-agent-token-id'], authorization: h.authorization };
    },
    protectedHits: () => up.seen.length,
    setClock: (ms) => (clockOffsetMs = ms),
    tokenTtlS: TOKEN_TTL_S,
    deny: (id) => denyViaAdmin(gw.adminUrl, id),
    close: async () => {
      await nginx.stop();
      await gw.close();
      await up.close();
      removeTempDirs();
    },
  };
});
