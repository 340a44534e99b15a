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
