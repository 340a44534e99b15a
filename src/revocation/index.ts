/**
 * Certificate revocation (PROTOCOL.md section 7): OCSP and CRL behind one cached checker.
 * @module
 */
export { RevocationChecker, type RevocationMode, type RevocationOptions } from './checker.js';
export { parseCrl, crlDistributionPoints, type ParsedCrl } from './crl.js';
export { buildOcspRequest, verifyOcspResponse, ocspResponderUrls, OcspResponseError, type OcspAnswer, type OcspQuestion } from './ocsp.js';
export { normalizeSerial } from './serial.js';
