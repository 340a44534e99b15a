/**
 * Agent identity from X.509 client certificates (PROTOCOL.md section 2).
 * @module
 */
export { TrustBundle, checkAcceptedChain, checkKeyCaps, thumbprintOf, algForKey, CERT_LIMITS, KEY_LIMITS, CRITICAL_EXTENSIONS_ALLOWED } from './certificate.js';
export type { AgentIdentity, ProofAlg } from './certificate.js';
export { DirectIdentityResolver, type DirectResolverStats } from './direct.js';
export { ForwardedPathValidator } from './path-validation.js';
export { ForwardedVerifier, parseTrustedProxies, type ForwardedOptions } from './forwarded.js';
export { canonicalString, signCanonical, parseHmacKeys, certFromHeader, FWD_HEADERS, MIN_SECRET_BYTES, type ForwardedFields } from './forwarded-canonical.js';
