/**
 * Agent identity from X.509 client certificates (PROTOCOL.md section 2).
 * @module
 */
export { TrustBundle, verifyAgentCertificate, thumbprintOf, algForKey, CERT_LIMITS } from './certificate.js';
export type { AgentIdentity, ProofAlg } from './certificate.js';
export { DirectIdentityResolver } from './direct.js';
export { identityHook, type IdentityCheck } from './hook.js';
