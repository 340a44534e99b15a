/**
 * Request-header hygiene of PROTOCOL.md section 5: which client-sent headers never reach the
 * upstream, and how `X-Forwarded-For` is written. Pure functions, shared by the proxy and the
 * configuration check of `GATE_PROXY_PASS_HEADERS`.
 * @module
 */
import type { IncomingHttpHeaders } from 'node:http';

/** Headers that describe one hop (RFC 9110 section 7.6.1), never forwarded. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'expect', 'http2-settings',
]);

/** Names reserved for the gate's own identity headers, any case, `-` or `_`. */
const RESERVED = /^x[-_](agent|gate)[-_]/i;

/**
 * Client-sent headers that upstreams commonly read as facts established by a proxy in front
 * of them (client address, scheme, host, port, path, client certificate). A client of the gate
 * could otherwise assert them. Matched after lowercasing and reading `_` as `-`, since CGI-style
 * servers fold `X_Real_IP` and `X-Real-IP` into the same variable.
 */
export const STRIPPED_HEADERS: readonly string[] = [
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'true-client-ip',
  'x-cluster-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-original-forwarded-for',
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
  'client-cert',
  'client-cert-chain',
  'x-client-cert',
  'x-ssl-client-cert',
  'ssl-client-cert',
  'x-ssl-cert',
];
const STRIPPED = new Set(STRIPPED_HEADERS);
/** Every `X-Forwarded-*` name: XFCC, Host, Port, Proto, Prefix, Server, Ssl... */
const X_FORWARDED = /^x-forwarded-/;

/** Headers the gate writes itself (after stripping any client-sent value). */
const GATE_WRITTEN = new Set(['x-forwarded-for', 'x-forwarded-proto']);

/** How the gate writes `X-Forwarded-For` (`GATE_PROXY_XFF`). */
export type XffMode = 'replace' | 'append';

/** True when a client-sent header of this (lowercase) name is dropped before forwarding by default. */
export function isStrippedHeader(name: string): boolean {
  const n = name.toLowerCase().replace(/_/g, '-');
  return STRIPPED.has(n) || X_FORWARDED.test(n);
}

/**
 * Why `name` cannot be in `GATE_PROXY_PASS_HEADERS`, or undefined when it can: only headers
 * stripped by default are listed, never the gate's own, `Authorization`, hop-by-hop ones, or
 * the two the gate writes itself.
 */
export function passHeaderProblem(name: string): string | undefined {
  const n = name.toLowerCase();
  if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(n)) return `${JSON.stringify(name)} is not a header name`;
  if (RESERVED.test(n) || n === 'authorization' || HOP_BY_HOP.has(n)) return `${n} can never be passed to the upstream`;
  if (GATE_WRITTEN.has(n.replace(/_/g, '-'))) return `${n} is written by the gate (see GATE_PROXY_XFF)`;
  if (!isStrippedHeader(n)) return `${n} is not stripped, so it needs no listing`;
  return undefined;
}

/** Header policy of one forwarder. */
export interface HeaderPolicy {
  /** Lowercase names from `GATE_PROXY_PASS_HEADERS` (checked by {@link passHeaderProblem}). */
  pass: ReadonlySet<string>;
  xff: XffMode;
}

/** The default policy: strip everything listed, replace `X-Forwarded-For`. */
export const DEFAULT_HEADER_POLICY: HeaderPolicy = { pass: new Set(), xff: 'replace' };

/** What the gate asserts about the caller to the upstream. */
export interface ForwardIdentity {
  agentId: string;
  thumbprint: string;
  tokenId: string;
}

/**
 * Request headers as the upstream must see them (section 5). `clientAddress` is the TCP peer in
 * direct mode and the signed `x-gate-fwd-addr` in forwarded mode.
 */
export function upstreamRequestHeaders(
  incoming: IncomingHttpHeaders,
  who: ForwardIdentity,
  clientAddress: string | undefined,
  policy: HeaderPolicy = DEFAULT_HEADER_POLICY,
): Record<string, string | string[]> {
  const named = new Set<string>();
  const conn = incoming.connection;
  if (typeof conn === 'string') for (const n of conn.split(',')) named.add(n.trim().toLowerCase());
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined) continue;
    if (HOP_BY_HOP.has(name) || named.has(name) || name === 'authorization' || RESERVED.test(name)) continue;
    if (GATE_WRITTEN.has(name) || (isStrippedHeader(name) && !policy.pass.has(name))) continue;
    out[name] = value;
  }
  out['x-agent-id'] = who.agentId;
  out['x-agent-thumbprint'] = who.thumbprint;
  out['x-agent-token-id'] = who.tokenId;
  const prior = incoming['x-forwarded-for'];
  if (clientAddress) {
    // Node joins repeated X-Forwarded-For lines with ', ' already.
    out['x-forwarded-for'] = policy.xff === 'append' && typeof prior === 'string' && prior.trim() !== '' ? `${prior}, ${clientAddress}` : clientAddress;
  }
  out['x-forwarded-proto'] = 'https';
  return out;
}

/** Most distinct client header spellings whose verdict one policy remembers (client-chosen, so bounded). */
const VERDICT_CACHE_MAX = 512;

/**
 * Whether a client-sent header name (any spelling) may be forwarded under `policy`, before the
 * per-request `Connection` list: the rules of {@link upstreamRequestHeaders} for one name.
 */
function forwardable(lower: string, policy: HeaderPolicy): boolean {
  if (HOP_BY_HOP.has(lower) || lower === 'authorization' || RESERVED.test(lower)) return false;
  if (GATE_WRITTEN.has(lower) || (isStrippedHeader(lower) && !policy.pass.has(lower))) return false;
  return true;
}

/**
 * {@link upstreamRequestHeaders} over the request's raw header lines: a flat `[name, value, ...]`
 * array in the client's order and spelling, as undici takes it, so a proxied request costs no
 * header object and no lowercasing of names seen before. `verdicts` remembers each spelling's
 * fate for `policy` (one map per policy, bounded). `connection` and `xff` are the request's
 * parsed `Connection` and `X-Forwarded-For` (Node joins repeated lines).
 */
export function upstreamRawHeaders(
  raw: readonly string[],
  connection: string | undefined,
  xff: string | undefined,
  who: ForwardIdentity,
  clientAddress: string | undefined,
  policy: HeaderPolicy,
  verdicts: Map<string, boolean>,
): string[] {
  let named: Set<string> | undefined;
  if (connection !== undefined && connection !== 'keep-alive' && connection !== 'close') {
    named = new Set();
    for (const n of connection.split(',')) named.add(n.trim().toLowerCase());
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    let keep = verdicts.get(name);
    if (keep === undefined) {
      keep = forwardable(name.toLowerCase(), policy);
      if (verdicts.size < VERDICT_CACHE_MAX) verdicts.set(name, keep);
    }
    if (!keep || (named !== undefined && named.has(name.toLowerCase()))) continue;
    out.push(name, raw[i + 1]!);
  }
  out.push('x-agent-id', who.agentId, 'x-agent-thumbprint', who.thumbprint, 'x-agent-token-id', who.tokenId);
  if (clientAddress) {
    out.push('x-forwarded-for', policy.xff === 'append' && xff !== undefined && xff.trim() !== '' ? `${xff}, ${clientAddress}` : clientAddress);
  }
  out.push('x-forwarded-proto', 'https');
  return out;
}
