/**
 * The dev and staging PKI: a CA, the gate's server certificate and short-lived agent client
 * certificates, in memory or as files under `pki/dev`.
 *
 * Built on @peculiar/x509 over Node's WebCrypto because node-forge cannot sign with ECDSA or
 * Ed25519 keys, and shelling out to the openssl CLI would cost a process per certificate (and
 * make the test suite depend on its flags). openssl is used only for PKCS#12, see `p12.ts`.
 * @module
 */
export type { KeyAlg } from './keys.js';
export { KEY_ALGS } from './keys.js';
export type { KeyAndCert } from './issue.js';
export { DEV_CA_COMMON_NAME, createCa, createIntermediateCa } from './ca.js';
export type { CreateCaOptions, CreateIntermediateCaOptions } from './ca.js';
export { DEFAULT_SERVER_NAMES, issueAgentCert, issueServerCert } from './leaf.js';
export type { AgentCertOptions, ServerCertOptions } from './leaf.js';
export { AGENT_NAME_PATTERN, assertAgentName, isValidAgentName } from './agent-name.js';
export { DEMO_AGENT, agentPaths, devPkiPaths, ensureDevPki, initDevPki, issueAgentFiles } from './dev-pki.js';
export type { DevPkiPaths, InitDevPkiOptions, IssueAgentFilesOptions } from './dev-pki.js';
export {
  REVOCATION_REASONS,
  caDatabasePath,
  canonicalSerial,
  readCaDatabase,
  recordIssued,
  revokeCertificate,
} from './ca-db.js';
export type { CaDbEntry, RevocationReason, RevokeOptions } from './ca-db.js';
export { devPkiConfigPath, readDevPkiConfig } from './dev-config.js';
export type { DevPkiConfig } from './dev-config.js';
export { createCrl, writeCrl } from './crl.js';
export type { CreateCrlOptions, CrlEntryInput, CrlIdpInput, WriteCrlOptions } from './crl.js';
export { buildOcspErrorResponse, buildOcspResponse, issueOcspSignerCert } from './ocsp.js';
export type { BuildOcspResponseOptions, OcspCertStatus, OcspErrorStatus, OcspLookup, OcspSignerCertOptions } from './ocsp.js';
export { lookupFromEntries, startOcspResponder } from './ocsp-responder.js';
export type { OcspResponder, OcspResponderOptions } from './ocsp-responder.js';
