/**
 * Agent runtime attestation (PROTOCOL.md section 8).
 * @module
 */
export { AttestationRegistry, checkAttestation, type AttestationContext, type AttestationVerifier } from './registry.js';
