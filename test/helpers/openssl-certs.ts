/**
 * Throwaway certificates made with the openssl CLI, independent of the code under test: a
 * self-signed certificate of each key type the SDK supports, and an attacker's decoy chain
 * for the pinning tests (which needs `-force_pubkey`, beyond the dev PKI builders).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A certificate and its private key, PEM. */
export interface CertPair {
  cert: string;
  key: string;
}

export type KeyKind = 'p256' | 'p384' | 'ed25519' | 'rsa2048';

const NEWKEY: Record<KeyKind, string[]> = {
  p256: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  p384: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  ed25519: ['-newkey', 'ed25519'],
  rsa2048: ['-newkey', 'rsa:2048'],
};

function inTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'agc-cert-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A self-signed certificate made by `openssl req -x509`. */
export function makeCert(kind: KeyKind, cn: string, extra: string[] = []): CertPair {
  return inTempDir((dir) => {
    openssl(dir, ['req', '-x509', ...NEWKEY[kind], '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '1', '-subj', `/CN=${cn}`, ...extra]);
    return { cert: readFileSync(join(dir, 'cert.pem'), 'utf8'), key: readFileSync(join(dir, 'key.pem'), 'utf8') };
  });
}

/**
 * An attacker's server certificate for the pin test: `leaf` (IP SAN 127.0.0.1) is properly
 * issued by `ca` (a CA the victim trusts, e.g. a compromised one); `decoy` claims to be that
 * CA (same subject name) but carries `pinnedKeyOf`'s public key and a signature by an
 * unrelated key. Presenting leaf + decoy makes Node's displayed chain show the pinned key
 * above the leaf, although no valid signature links them.
 */
export function makeDecoyChain(pinnedKeyOfPem: string): { ca: CertPair; leaf: CertPair; chain: string } {
  return inTempDir((dir) => {
    const read = (f: string) => readFileSync(join(dir, f), 'utf8');
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    writeFileSync(join(dir, 'pinned.crt'), pinnedKeyOfPem);
    openssl(dir, ['x509', '-in', 'pinned.crt', '-pubkey', '-noout', '-out', 'pinned.pub']);
    openssl(dir, ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=Rogue CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    openssl(dir, ['req', '-new', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=rogue-gate']);
    // No key identifiers: the decoy then matches the leaf's issuer by name alone.
    writeFileSync(join(dir, 'leaf.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nsubjectKeyIdentifier=none\nauthorityKeyIdentifier=none\n');
    openssl(dir, ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.crt', '-days', '1', '-extfile', 'leaf.ext']);
    openssl(dir, ['req', '-new', ...ec, '-keyout', 'decoy.key', '-out', 'decoy.csr', '-subj', '/CN=Rogue CA']);
    writeFileSync(join(dir, 'decoy.ext'), 'basicConstraints=critical,CA:TRUE\nsubjectKeyIdentifier=none\nauthorityKeyIdentifier=none\n');
    openssl(dir, ['x509', '-req', '-in', 'decoy.csr', '-signkey', 'decoy.key', '-force_pubkey', 'pinned.pub', '-out', 'decoy.crt', '-days', '1', '-extfile', 'decoy.ext']);
    const leaf = { cert: read('leaf.crt'), key: read('leaf.key') };
    return { ca: { cert: read('ca.crt'), key: read('ca.key') }, leaf, chain: leaf.cert + read('decoy.crt') };
  });
}
