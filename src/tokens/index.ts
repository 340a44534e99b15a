/**
 * Access tokens and their signing keys.
 * @module
 */
export { TokenService, type VerifiedToken, type TokenServiceOptions } from './access-token.js';
export { loadSigningKeys, generateSigningJwk, KeySourceError, type SigningKey, type SigningKeySet } from './keys.js';
