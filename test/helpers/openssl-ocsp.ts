import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { X509Certificate } from 'node:crypto';
import type { KeyAndCert } from '../../src/pki/index.js';

const run = promisify(execFile);

/**
 * A real `openssl ocsp` responder, run once per request in -reqin/-respout mode behind a
 * loopback HTTP server: OpenSSL 3.0's own -port mode listens on all interfaces, serves one
 * connection at a time and hangs on readiness probes.
 */
export interface OpensslOcsp {
  url: string;
  /** Requests answered so far. */
  requests: number;
  /** When set, the server answers nothing (a hanging responder). */
  hang: boolean;
  /** Marks a certificate revoked in the index (takes effect on the next request). */
  revoke(cert: KeyAndCert): void;
  /** Adds a certificate to the index as valid. */
  add(cert: KeyAndCert): void;
  close(): Promise<void>;
}

function opensslTime(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
}

/** Starts the responder for `ca`, signing with `signer` (default: the CA itself). */
export async function startOpensslOcsp(ca: KeyAndCert, opts: { nextUpdateMinutes?: number; signer?: KeyAndCert } = {}): Promise<OpensslOcsp> {
  const dir = mkdtempSync(join(tmpdir(), 'ag-ocsp-'));
  const signer = opts.signer ?? ca;
  writeFileSync(join(dir, 'ca.crt'), ca.certPem);
  writeFileSync(join(dir, 'signer.crt'), signer.certPem);
  writeFileSync(join(dir, 'signer.key'), signer.keyPem, { mode: 0o600 });
  const rows = new Map<string, { cert: X509Certificate; revokedAt?: Date }>();
  const writeIndex = () => {
    const lines = [...rows.entries()].map(([serial, r]) => {
      const cn = /CN=([^\n]+)/.exec(r.cert.subject)?.[1] ?? 'x';
      return [r.revokedAt ? 'R' : 'V', opensslTime(new Date(r.cert.validTo)), r.revokedAt ? opensslTime(r.revokedAt) : '', serial, 'unknown', `/CN=${cn}`].join('\t');
    });
    writeFileSync(join(dir, 'index.txt'), lines.join('\n') + (lines.length ? '\n' : ''));
  };
  writeIndex();
  let n = 0;
  const state: OpensslOcsp = {
    url: '',
    requests: 0,
    hang: false,
    add(cert) {
      const x = new X509Certificate(cert.certPem);
      rows.set(x.serialNumber.toUpperCase(), { cert: x });
      writeIndex();
    },
    revoke(cert) {
      const x = new X509Certificate(cert.certPem);
      rows.set(x.serialNumber.toUpperCase(), { cert: x, revokedAt: new Date(Date.now() - 1000) });
      writeIndex();
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (state.hang) return; // never answers; the gate's timeout must fire
      state.requests++;
      const id = n++;
      const reqFile = join(dir, `req-${id}.der`);
      const respFile = join(dir, `resp-${id}.der`);
      writeFileSync(reqFile, Buffer.concat(chunks));
      const args = ['ocsp', '-index', join(dir, 'index.txt'), '-CA', join(dir, 'ca.crt'), '-rsigner', join(dir, 'signer.crt'), '-rkey', join(dir, 'signer.key'), '-reqin', reqFile, '-respout', respFile, '-nmin', String(opts.nextUpdateMinutes ?? 5)];
      run('openssl', args, { timeout: 10_000 }).then(
        () => res.writeHead(200, { 'content-type': 'application/ocsp-response' }).end(readFileSync(respFile)),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const a = server.address();
  state.url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  return state;
}
