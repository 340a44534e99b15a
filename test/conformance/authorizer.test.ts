/**
 * Authorizer mode (PROTOCOL.md section 13): a real nginx + njs rendered by
 * `agent-gate nginx-config --mode authorizer` proxying straight to the upstream and asking the
 * real gate (GATE_MODE=authorizer) for a decision on each gated request, held to the contract of
 * test/conformance/contract.ts; only the URL differs from direct mode. The decision cache is
 * off here (`--authz-cache-s 0`), so every case is decided by the gate as in direct mode; the
 * cache, the header screen and what else is particular to this mode are in
 * test/integration/authorizer.test.ts.
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
/** Short enough that an expired token is within the signed headers' skew window (below). */
const TOKEN_TTL_S = 60;

describeGateContract('authorizer', async (fx) => {
  ensureNginx();
  const up = await startUpstream();
  const key = writeKeyFile(tempDir('contract-authz-keys'));
  const env = forwardedTestEnv(fx, up.url, inject('redisUrl'), {
    ...contractEnv(fx),
    GATE_MODE: 'authorizer',
    GATE_FWD_HMAC_KEYS: `k1:${key.b64}`,
    // The clock cases move the gate's clock up to TTL + 100 s: nginx's timestamps stay valid.
    GATE_FWD_MAX_SKEW_S: '300',
    GATE_TOKEN_TTL_S: String(TOKEN_TTL_S),
    GATE_AUTHZ_CACHE_S: '0',
  });
  // nginx proxies to the upstream itself; the authorizer gate has none.
  delete env.GATE_UPSTREAM_URL;
  const gw = await startGate(env, { now: () => Date.now() + clockOffsetMs });
  const dir = join(tempDir('contract-authz'), 'out');
  const port = await freePort();
  const out = await renderNginxConfig({
    mode: 'authorizer',
    listen: `127.0.0.1:${port}`,
    gateUrl: gw.url.replace('https://', 'http://'),
    tlsCert: fx.serverCertFile,
    tlsKey: fx.serverKeyFile,
    clientCa: fx.caFile,
    hmacKeyFile: key.file,
    kid: 'k1',
    dir,
    authorizer: { upstreamUrl: up.url, cacheS: 0 },
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
