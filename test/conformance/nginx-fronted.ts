/**
 * The contract's gate behind a real nginx + njs rendered by `agent-gate nginx-config`, shared by
 * the two nginx-fronted modes: forwarded (test/conformance/nginx.test.ts: nginx → gate →
 * upstream) and authorizer (test/conformance/authorizer.test.ts: nginx → upstream, asking the
 * gate for a decision, with the decision cache off so every case is decided by the gate).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { inject } from 'vitest';
import type { NginxMode } from '../../src/nginx/index.js';
import { forwardedTestEnv, startGate } from '../helpers/gate.js';
import { startUpstream } from '../helpers/upstream.js';
import { ensureNginx, launchNginx, relaxEdgeLimits, removeTempDirs, renderTestConfig, tempDir, writeKeyFile } from '../nginx/harness.js';
import { contractEnv, denyViaAdmin, upstreamSide, type ContractFixtures, type ContractGate } from './contract.js';

/** Short enough that an expired token is within the signed headers' skew window (below). */
const TOKEN_TTL_S = 60;

/** Starts upstream, gate and nginx for `mode`; `label` names the temporary directories. */
export async function startNginxFrontedGate(fx: ContractFixtures, mode: NginxMode, label: string): Promise<ContractGate> {
  ensureNginx();
  let clockOffsetMs = 0;
  const up = await startUpstream();
  const key = writeKeyFile(tempDir(`${label}-keys`));
  const env = forwardedTestEnv(fx, up.url, inject('redisUrl'), {
    ...contractEnv(fx),
    GATE_FWD_HMAC_KEYS: `k1:${key.b64}`,
    // The clock cases move the gate's clock up to TTL + 100 s: nginx's timestamps stay valid.
    GATE_FWD_MAX_SKEW_S: '300',
    GATE_TOKEN_TTL_S: String(TOKEN_TTL_S),
    ...(mode === 'authorizer' ? { GATE_MODE: 'authorizer', GATE_AUTHZ_CACHE_S: '0' } : {}),
  });
  // In authorizer mode nginx proxies to the upstream itself; the gate has none.
  if (mode === 'authorizer') delete env.GATE_UPSTREAM_URL;
  const gw = await startGate(env, { now: () => Date.now() + clockOffsetMs });
  const nginx = await launchNginx(label, async (dir, port) => {
    const out = await renderTestConfig(fx, port, {
      gateUrl: gw.url.replace('https://', 'http://'),
      hmacKeyFile: key.file,
      kid: 'k1',
      dir,
      ...(mode === 'authorizer' ? { mode, authorizer: { upstreamUrl: up.url, cacheS: 0 } } : {}),
    });
    if (out.warnings.length > 0) throw new Error(out.warnings.join('\n'));
    writeFileSync(out.confPath, relaxEdgeLimits(readFileSync(out.confPath, 'utf8')));
  });
  return {
    url: nginx.url,
    ...upstreamSide(up),
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
}
