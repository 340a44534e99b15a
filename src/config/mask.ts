import type { GateConfig } from './load.js';

/** The configuration as printed by `config check`: inline secrets replaced by `***`. */
export function maskedConfig(c: GateConfig): unknown {
  return {
    ...c,
    signing: { jwk: c.signing.jwk ? '***' : undefined, keyFile: c.signing.keyFile },
    forwarded: { ...c.forwarded, hmacKeys: c.forwarded.hmacKeys ? c.forwarded.hmacKeys.replace(/:[^,]*/g, ':***') : undefined },
    store: { ...c.store, redisUrl: c.store.redisUrl?.replace(/\/\/([^@/]*)@/, '//***@'), clusterNodes: c.store.clusterNodes?.map((n) => n.replace(/\/\/([^@/]*)@/, '//***@')) },
  };
}
