/**
 * Helper of pki-init.sh for what the `agent-gate pki` commands do not offer: server
 * certificates for the compose service names (`pki init` always issues `localhost`), and a
 * freshness check so that re-running the one-shot service re-issues only what is missing,
 * expiring within a day, or no longer signed by the CA on disk.
 *
 *   node pki-helper.mjs server-cert DIR NAME SAN[,SAN...]   writes DIR/NAME.crt and DIR/NAME.key (0600)
 *   node pki-helper.mjs fresh DIR CERT [KEY]                 exit 0 when CERT (and KEY) can stay, 1 otherwise
 *
 * The PKI code is the image's own (`/app/dist/pki/index.js`, or AGENT_GATE_PKI_MODULE).
 * Diagnostics go to stderr, one line each; any failure exits 2.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import process from 'node:process';
import { URL } from 'node:url';

const DAY_MS = 86_400_000;
const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

function fail(message) {
  process.stderr.write(`pki-helper: ${message}\n`);
  process.exit(2);
}

/** The CA certificate of DIR. */
function loadCa(dir) {
  const caPath = join(dir, 'ca.crt');
  if (!existsSync(caPath)) fail(`no CA in ${dir} (run agent-gate pki init first)`);
  return new X509Certificate(readFileSync(caPath));
}

/** True when the pair on disk is signed by `ca`, matches its key and is valid for another day. */
function isFresh(ca, certPath, keyPath) {
  try {
    const cert = new X509Certificate(readFileSync(certPath));
    if (keyPath !== undefined && !cert.checkPrivateKey(createPrivateKey(readFileSync(keyPath)))) return false;
    const now = Date.now();
    return cert.checkIssued(ca) && cert.verify(ca.publicKey) && Date.parse(cert.validFrom) <= now && Date.parse(cert.validTo) - now > DAY_MS;
  } catch {
    return false;
  }
}

/** The SANs of a certificate as the names `issueServerCert` takes (DNS names and IPs). */
function sanNames(cert) {
  return (cert.subjectAltName ?? '')
    .split(', ')
    .map((s) => s.replace(/^(DNS|IP Address):/, ''))
    .filter(Boolean)
    .sort();
}

function writeAtomic(path, data, mode) {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode, flag: 'wx' });
  renameSync(tmp, path);
}

async function serverCert(dir, name, names) {
  if (!NAME_RE.test(name)) fail(`bad certificate name ${JSON.stringify(name)}`);
  const wanted = names
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean);
  if (wanted.length === 0) fail('a server certificate needs at least one name');
  for (const n of wanted) {
    if (isIP(n) === 0 && !/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(n)) fail(`bad server name ${JSON.stringify(n)}`);
  }
  const ca = loadCa(dir);
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  if (isFresh(ca, certPath, keyPath)) {
    const have = sanNames(new X509Certificate(readFileSync(certPath)));
    // IPv6 SANs print in full form; compare through the same parser.
    const want = wanted.map((n) => (isIP(n) === 6 ? new URL(`http://[${n}]/`).hostname.slice(1, -1) : n)).sort();
    const haveNorm = have.map((n) => (isIP(n) === 6 ? new URL(`http://[${n}]/`).hostname.slice(1, -1) : n)).sort();
    if (JSON.stringify(haveNorm) === JSON.stringify(want)) {
      process.stderr.write(`pki-helper: ${certPath} is current\n`);
      return;
    }
  }
  // eslint-disable-next-line no-restricted-properties -- a deployment script; tests point it at src/
  const lib = await import(process.env.AGENT_GATE_PKI_MODULE || '/app/dist/pki/index.js');
  const issuer = { certPem: readFileSync(join(dir, 'ca.crt'), 'utf8'), keyPem: readFileSync(join(dir, 'ca.key'), 'utf8'), certDer: ca.raw };
  const issued = await lib.issueServerCert(issuer, { names: wanted });
  // The key first: a certificate on disk always has its key next to it.
  writeAtomic(keyPath, issued.keyPem, 0o600);
  writeAtomic(certPath, issued.certPem, 0o644);
  process.stdout.write(`${certPath}\n${keyPath}\n`);
}

async function main(argv) {
  const [cmd, ...args] = argv;
  if (cmd === 'server-cert' && args.length === 3) return serverCert(args[0], args[1], args[2]);
  if (cmd === 'fresh' && (args.length === 2 || args.length === 3)) {
    const ca = loadCa(args[0]);
    process.exit(isFresh(ca, args[1], args[2]) ? 0 : 1);
  }
  fail('usage: pki-helper.mjs server-cert DIR NAME SAN[,SAN...] | fresh DIR CERT [KEY]');
}

main(process.argv.slice(2)).catch((err) => fail(String(err?.message ?? err).replace(/\s*\n\s*/g, ' ')));
