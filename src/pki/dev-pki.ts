/**
 * The dev PKI on disk: `<dir>/ca.{crt,key}`, `<dir>/server.{crt,key}` and
 * `<dir>/agents/<name>.{crt,key,p12}`, plus the CA database `<dir>/index.txt` (see `ca-db.ts`)
 * and the settings `<dir>/pki.json`. Paths returned are absolute so they can go straight into
 * `GATE_*` variables whatever the working directory of the gate.
 * @module
 */
import { X509Certificate as NodeX509, createPrivateKey } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { assertAgentName } from './agent-name.js';
import { createCa } from './ca.js';
import { ensureCaDatabase, recordIssued } from './ca-db.js';
import { readDevPkiConfig, writeDevPkiConfig, type DevPkiConfig } from './dev-config.js';
import { PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, ensureDir, exists, loadKeyAndCert, writeFileAtomic } from './files.js';
import type { KeyAndCert } from './issue.js';
import type { KeyAlg } from './keys.js';
import { checkUrl, issueAgentCert, issueServerCert } from './leaf.js';
import { exportPkcs12 } from './p12.js';

const DAY_MS = 86_400_000;
const DEFAULT_AGENT_DAYS = 30;
// Ten years, the CA's own default: beyond that the CA's end date caps the agent anyway.
const MAX_AGENT_DAYS = 3650;
/** The agent `ensureDevPki` provisions for `npm start`. */
export const DEMO_AGENT = 'demo';

/** File locations of a dev PKI directory. */
export interface DevPkiPaths {
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
}

/** The file locations of the dev PKI in `dir` (absolute). */
export function devPkiPaths(dir: string): DevPkiPaths {
  const root = resolve(dir);
  return {
    caCert: join(root, 'ca.crt'),
    caKey: join(root, 'ca.key'),
    serverCert: join(root, 'server.crt'),
    serverKey: join(root, 'server.key'),
  };
}

/** The file locations of agent `name` in the dev PKI in `dir` (absolute). */
export function agentPaths(dir: string, name: string): { cert: string; key: string; p12: string } {
  assertAgentName(name);
  const agents = join(resolve(dir), 'agents');
  return { cert: join(agents, `${name}.crt`), key: join(agents, `${name}.key`), p12: join(agents, `${name}.p12`) };
}

// The database entry goes first, then the key: a certificate on disk is always revocable by
// serial and always has its key next to it. An entry whose files never got written is harmless.
async function writePair(dir: string, certPath: string, keyPath: string, kc: KeyAndCert): Promise<void> {
  await recordIssued(dir, kc.certDer);
  await writeFileAtomic(keyPath, kc.keyPem, PRIVATE_FILE_MODE);
  await writeFileAtomic(certPath, kc.certPem, PUBLIC_FILE_MODE);
}

/** Options of {@link initDevPki}. */
export interface InitDevPkiOptions {
  alg?: KeyAlg;
  /** Recreate the CA and server certificate even when present; agents of the old CA stop verifying. */
  force?: boolean;
  /** Server certificate SANs; default localhost, 127.0.0.1 and ::1. */
  serverNames?: string[];
  /**
   * Stored in `<dir>/pki.json` (also when the PKI already exists) and put in every agent
   * certificate issued afterwards as a CRL Distribution Point. Unset keeps the stored value.
   */
  crlUrl?: string;
  /** As crlUrl, for the OCSP responder URL (Authority Information Access). */
  ocspUrl?: string;
  /** As crlUrl, for the AIA caIssuers URL. */
  caIssuersUrl?: string;
}

/** Merges the URLs given in `opts` into `<dir>/pki.json`; writes nothing when none is given. */
async function updateConfig(dir: string, opts: DevPkiConfig): Promise<void> {
  const given = Object.fromEntries(
    (['crlUrl', 'ocspUrl', 'caIssuersUrl'] as const).filter((k) => opts[k] !== undefined).map((k) => [k, opts[k]]),
  ) as DevPkiConfig;
  if (Object.keys(given).length === 0) return;
  await writeDevPkiConfig(dir, { ...(await readDevPkiConfig(dir)), ...given });
}

/**
 * Files: creates `<dir>/ca.crt`, `ca.key`, `server.crt`, `server.key` (keys mode 0600, dir 0700)
 * unless they exist (force overwrites), and the CA database `index.txt` (+ `index.txt.attr`).
 * URLs given are stored in `pki.json` either way.
 */
export async function initDevPki(dir: string, opts: InitDevPkiOptions = {}): Promise<{ dir: string; created: boolean }> {
  const root = resolve(dir);
  const p = devPkiPaths(root);
  // Checked before anything is written, so a typo leaves no half-initialised directory.
  for (const key of ['crlUrl', 'ocspUrl', 'caIssuersUrl'] as const) {
    const url = opts[key];
    if (url !== undefined) checkUrl(key, url);
  }
  const [caCert, caKey, serverCert, serverKey] = await Promise.all(
    [p.caCert, p.caKey, p.serverCert, p.serverKey].map(exists),
  );
  const keepCa = !opts.force && caCert && caKey;
  if (!opts.force) {
    if (caCert && caKey && serverCert && serverKey) {
      await updateConfig(root, opts);
      // A PKI made before the database existed gets an empty one, so openssl can read it.
      await ensureCaDatabase(root);
      return { dir: root, created: false };
    }
    // Refuse to guess: a lone CA file, or a server certificate without its CA, means someone
    // else's PKI or a broken one, and silently replacing it would strand its agents.
    if (caCert !== caKey) throw new Error(`incomplete CA in ${root}: ${caCert ? p.caKey : p.caCert} is missing; use force to recreate the dev PKI`);
    if (!caCert && (serverCert || serverKey)) throw new Error(`${root} holds a server certificate but no CA; use force to recreate the dev PKI`);
  }

  await ensureDir(root);
  await updateConfig(root, opts);
  let ca: KeyAndCert;
  if (keepCa) {
    ca = await loadKeyAndCert(p.caCert, p.caKey);
    await ensureCaDatabase(root);
  } else {
    ca = await createCa({ alg: opts.alg });
    // The CA itself is not in its own database, as with `openssl ca`: it cannot revoke itself.
    await writeFileAtomic(p.caKey, ca.keyPem, PRIVATE_FILE_MODE);
    await writeFileAtomic(p.caCert, ca.certPem, PUBLIC_FILE_MODE);
    // The old database, CRL and CRL counter describe the old CA: a CRL signed by it would only
    // fail verification, and its serials mean nothing under the new one. Cleared only once the
    // new CA is on disk, so a failed write leaves the old PKI whole.
    await ensureCaDatabase(root, { reset: true });
    await Promise.all(['ca.crl', 'crlnumber'].map((f) => rm(join(root, f), { force: true })));
  }
  await writePair(root, p.serverCert, p.serverKey, await issueServerCert(ca, { alg: opts.alg, names: opts.serverNames }));
  return { dir: root, created: true };
}

/** Options of {@link issueAgentFiles}. */
export interface IssueAgentFilesOptions {
  alg?: KeyAlg;
  /** Days of validity from now; default 30. */
  validityDays?: number;
  /** When set, also writes `<name>.p12` protected by this password. */
  p12Password?: string;
  /** Override the CRL URL of `<dir>/pki.json` for this certificate. */
  crlUrl?: string;
  /** Override the OCSP URL of `<dir>/pki.json` for this certificate. */
  ocspUrl?: string;
  /** Override the caIssuers URL of `<dir>/pki.json` for this certificate. */
  caIssuersUrl?: string;
}

/**
 * Files: loads the CA from `<dir>` and writes `<dir>/agents/<name>.crt` / `.key` (0600); with
 * `p12Password` also `<name>.p12` (0600) via `openssl pkcs12 -export`. Re-issuing replaces the
 * files; the replaced certificate stays valid in the CA database until revoked or expired.
 * The certificate is recorded in `index.txt` and carries the URLs of `pki.json`. Returns the paths.
 */
export async function issueAgentFiles(
  dir: string,
  name: string,
  opts: IssueAgentFilesOptions = {},
): Promise<{ cert: string; key: string; p12?: string }> {
  const paths = agentPaths(dir, name);
  const days = opts.validityDays ?? DEFAULT_AGENT_DAYS;
  if (!(Number.isFinite(days) && days > 0 && days <= MAX_AGENT_DAYS)) {
    throw new TypeError(`validityDays must be a number of days in (0, ${MAX_AGENT_DAYS}], got ${days}`);
  }
  const { caCert, caKey } = devPkiPaths(dir);
  if (!(await exists(caCert)) || !(await exists(caKey))) {
    throw new Error(`no CA in ${resolve(dir)} (${caCert} and ${caKey} expected): initialise the dev PKI first`);
  }
  const ca = await loadKeyAndCert(caCert, caKey);
  // An explicit end date is not capped by the issuer, so cap it here: no agent outlives its CA.
  const caEnd = Date.parse(new NodeX509(ca.certDer).validTo);
  const notAfter = new Date(Math.min(Date.now() + days * DAY_MS, caEnd));
  const config = await readDevPkiConfig(dir);
  const agent = await issueAgentCert(ca, name, {
    alg: opts.alg,
    notAfter,
    crlUrl: opts.crlUrl ?? config.crlUrl,
    ocspUrl: opts.ocspUrl ?? config.ocspUrl,
    caIssuersUrl: opts.caIssuersUrl ?? config.caIssuersUrl,
  });

  await ensureDir(join(resolve(dir), 'agents'));
  await writePair(dir, paths.cert, paths.key, agent);
  if (opts.p12Password === undefined) return { cert: paths.cert, key: paths.key };

  const der = await exportPkcs12({
    certPath: paths.cert,
    keyPath: paths.key,
    caPath: caCert,
    friendlyName: name,
    password: opts.p12Password,
  });
  await writeFileAtomic(paths.p12, der, PRIVATE_FILE_MODE);
  return { cert: paths.cert, key: paths.key, p12: paths.p12 };
}

/**
 * True when the pair on disk is usable for at least another day: both files parse, the key
 * matches, and the certificate was signed by `ca` (a forced re-init replaces the CA).
 */
async function isCurrent(certPath: string, keyPath: string, ca: NodeX509): Promise<boolean> {
  try {
    const { certPem, keyPem } = await loadKeyAndCert(certPath, keyPath);
    const cert = new NodeX509(certPem);
    const now = Date.now();
    return (
      cert.checkIssued(ca) &&
      cert.verify(ca.publicKey) &&
      cert.checkPrivateKey(createPrivateKey(keyPem)) &&
      Date.parse(cert.validFrom) <= now &&
      Date.parse(cert.validTo) - now > DAY_MS
    );
  } catch {
    // Missing or unreadable files are re-issued; a real I/O problem resurfaces on the write.
    return false;
  }
}

/**
 * Files: what `npm start` needs: initDevPki(dir) + agent `demo` if missing. The server and demo
 * certificates are also re-issued when expiring within a day or not signed by the current CA,
 * since a 30-day agent certificate would otherwise break `npm start` a month later.
 */
export async function ensureDevPki(
  dir: string,
): Promise<{ caCert: string; serverCert: string; serverKey: string; agentCert: string; agentKey: string }> {
  await initDevPki(dir);
  const p = devPkiPaths(dir);
  const ca = await loadKeyAndCert(p.caCert, p.caKey);
  const caX509 = new NodeX509(ca.certDer);
  if (!(await isCurrent(p.serverCert, p.serverKey, caX509))) {
    await writePair(dir, p.serverCert, p.serverKey, await issueServerCert(ca));
  }
  const demo = agentPaths(dir, DEMO_AGENT);
  if (!(await isCurrent(demo.cert, demo.key, caX509))) await issueAgentFiles(dir, DEMO_AGENT);
  return { caCert: p.caCert, serverCert: p.serverCert, serverKey: p.serverKey, agentCert: demo.cert, agentKey: demo.key };
}
