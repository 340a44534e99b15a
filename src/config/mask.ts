import type { GateConfig } from './load.js';
import { OPTION_ENTRIES } from './options.js';

/**
 * The configuration as printed by `config check`: the value of every option the table marks
 * secret masked where it lands in the config (a string, or each string of a list).
 */
export function maskedConfig(c: GateConfig): unknown {
  const copy = structuredClone(c) as unknown as Record<string, unknown>;
  for (const [, o] of OPTION_ENTRIES) {
    if (!o.secret) continue;
    const keys = o.secret.at.split('.');
    const last = keys.pop()!;
    let parent: Record<string, unknown> | undefined = copy;
    for (const k of keys) parent = parent?.[k] as Record<string, unknown> | undefined;
    if (!parent || !(last in parent)) throw new Error(`option table: secret path ${o.secret.at} is not in GateConfig`);
    const v = parent[last];
    if (typeof v === 'string') parent[last] = o.secret.mask(v);
    else if (Array.isArray(v)) parent[last] = v.map((s) => (typeof s === 'string' ? o.secret!.mask(s) : s));
  }
  return copy;
}
