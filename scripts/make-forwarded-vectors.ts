/**
 * Generates test/vectors/forwarded.json: test vectors of the forwarded-header signature
 * (PROTOCOL.md section 6), computed with the TypeScript implementation
 * (src/identity/forwarded-canonical.ts) over a few real certificates from src/pki. The njs
 * signer nginx/gate_sign.js and the TypeScript code are both checked against them
 * (test/nginx/vectors.test.ts), so they cannot drift apart.
 *
 * Run once, and commit the result: `npx tsx scripts/make-forwarded-vectors.ts [out.json]`.
 * Every run draws new certificate keys, so the file changes completely; never needed unless
 * the contract changes.
 * @module
 */
import { createHash, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { canonicalString, certFromHeader, parseHmacKeys, signCanonical, type ForwardedFields } from '../src/identity/forwarded-canonical.js';
import { createCa, issueAgentCert } from '../src/pki/index.js';

/**
 * nginx's ngx_escape_uri(NGX_ESCAPE_URI_COMPONENT), which makes `$ssl_client_escaped_cert`:
 * every byte except ALPHA, DIGIT, "-", ".", "_" and "~" becomes %XX with uppercase hex. That is
 * the table of nginx 1.22 (0xfc009fff...; later versions also keep "!'()*", which no PEM
 * contains). Works on the UTF-8 bytes of `text`.
 */
export function nginxEscapeUriComponent(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9._~-]/.test(c) ? c : '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** PEM exactly as nginx (OpenSSL's PEM_write_bio_X509) writes it: 64-column lines, final newline. */
export function opensslPem(pem: string): string {
  return new X509Certificate(pem).toString();
}

/** One vector: every input of the signature, and the expected canonical string and signature. */
export interface ForwardedVector extends ForwardedFields {
  name: string;
  description: string;
  /** The HMAC secret, base64, as in GATE_FWD_HMAC_KEYS. */
  secret: string;
  /** The client certificate as PEM (OpenSSL's formatting), or null. */
  certPem: string | null;
  /** The x-gate-fwd-cert value: `$ssl_client_escaped_cert` of certPem, or `-`. */
  cert: string;
  canonical: string;
  sig: string;
}

/** The vectors file. */
export interface ForwardedVectorsFile {
  description: string;
  generatedBy: string;
  vectors: ForwardedVector[];
}

function secretFor(label: string, bytes: number): string {
  // Deterministic, clearly test-only secrets.
  let out = Buffer.alloc(0);
  for (let i = 0; out.length < bytes; i++) out = Buffer.concat([out, createHash('sha256').update(`agent-gate forwarded test vector ${label} ${i}`).digest()]);
  return out.subarray(0, bytes).toString('base64');
}

/** Builds the vectors (new certificates each time). */
export async function makeForwardedVectors(): Promise<ForwardedVectorsFile> {
  const ca = await createCa({ alg: 'ec-p256', commonName: 'agent-gate vectors CA' });
  const hour = 3600_000;
  const p256 = await issueAgentCert(ca, 'vector-p256', { alg: 'ec-p256' });
  const ed = await issueAgentCert(ca, 'vector-ed25519', { alg: 'ed25519' });
  const rsa = await issueAgentCert(ca, 'vector-rsa', { alg: 'rsa-2048', sanDns: ['agent.example.com'] });
  const expired = await issueAgentCert(ca, 'vector-expired', { alg: 'ec-p256', notBefore: new Date(Date.now() - 48 * hour), notAfter: new Date(Date.now() - hour) });

  const k1 = { kid: 'k1', secret: secretFor('k1', 32) };
  const k2 = { kid: '2026-06.rotation_B', secret: secretFor('k2', 48) };
  const base = {
    ts: '1764000000',
    id: '0123456789abcdef0123456789abcdef',
    host: 'gate.example.com',
    addr: '203.0.113.7',
  };

  type Input = Omit<ForwardedVector, 'cert' | 'thumbprint' | 'canonical' | 'sig' | 'secret' | 'kid'> & { key: { kid: string; secret: string } };
  const inputs: Input[] = [
    { name: 'cert-p256', description: 'verified ECDSA P-256 client certificate, POST challenge', key: k1, ...base, method: 'POST', requestUri: '/.agent-gate/v1/challenge', verify: 'SUCCESS', certPem: opensslPem(p256.certPem) },
    { name: 'cert-ed25519', description: 'verified Ed25519 client certificate, gated GET with a query', key: k1, ...base, id: 'fedcba9876543210fedcba9876543210', method: 'GET', requestUri: '/api/v1/items?limit=10&cursor=abc', verify: 'SUCCESS', certPem: opensslPem(ed.certPem) },
    { name: 'cert-rsa', description: 'verified RSA-2048 client certificate (longer header), PUT', key: k1, ...base, method: 'PUT', requestUri: '/api/v1/items/42', verify: 'SUCCESS', certPem: opensslPem(rsa.certPem) },
    { name: 'no-cert', description: 'no client certificate: verify NONE, cert "-", thumbprint "-"', key: k1, ...base, method: 'POST', requestUri: '/.agent-gate/v1/challenge', verify: 'NONE', certPem: null },
    { name: 'failed-verify', description: 'a certificate nginx could not verify (FAILED:reason); still signed with its thumbprint', key: k1, ...base, method: 'GET', requestUri: '/api/v1/items', verify: 'FAILED:certificate has expired', certPem: opensslPem(expired.certPem) },
    { name: 'percent-encoded-uri', description: '$request_uri is signed raw: percent-encodings (upper and lower case), encoded slash, plus, kept as sent', key: k1, ...base, method: 'GET', requestUri: '/caf%C3%A9/%e2%9c%93/a%2Fb?q=%F0%9F%98%80&sp=a+b%20c&empty=&x', verify: 'SUCCESS', certPem: opensslPem(p256.certPem) },
    { name: 'unicode-uri', description: 'raw UTF-8 in the request target, signed as its UTF-8 bytes (the nginx config refuses non-ASCII targets with 400; this checks the string handling only)', key: k1, ...base, method: 'GET', requestUri: '/café/✓?q=😀', verify: 'NONE', certPem: null },
    { name: 'ipv6-addr', description: 'IPv6 client address as $remote_addr writes it', key: k1, ...base, method: 'DELETE', requestUri: '/api/v1/items/42', addr: '2001:db8::7', verify: 'SUCCESS', certPem: opensslPem(p256.certPem) },
    { name: 'ipv6-loopback-head', description: 'IPv6 loopback, HEAD on a gate endpoint, numeric host', key: k1, ...base, method: 'HEAD', requestUri: '/.agent-gate/healthz', host: '[::1]', addr: '::1', verify: 'NONE', certPem: null },
    { name: 'rotation-k1', description: 'key rotation: these inputs signed with k1 ...', key: k1, ...base, method: 'POST', requestUri: '/.agent-gate/v1/token', verify: 'SUCCESS', certPem: opensslPem(ed.certPem) },
    { name: 'rotation-k2', description: '... and the same inputs signed with a second kid (48-byte secret); kid is part of the signed string', key: k2, ...base, method: 'POST', requestUri: '/.agent-gate/v1/token', verify: 'SUCCESS', certPem: opensslPem(ed.certPem) },
  ];

  const vectors = inputs.map(({ key, ...v }): ForwardedVector => {
    const secret = parseHmacKeys(`${key.kid}:${key.secret}`).get(key.kid)!;
    const cert = v.certPem === null ? '-' : nginxEscapeUriComponent(v.certPem);
    const thumbprint = certFromHeader(cert)?.thumbprint ?? '-';
    const fields: ForwardedFields = { kid: key.kid, ts: v.ts, id: v.id, method: v.method, requestUri: v.requestUri, host: v.host, addr: v.addr, verify: v.verify, thumbprint };
    const canonical = canonicalString(fields);
    return { name: v.name, description: v.description, secret: key.secret, ...fields, certPem: v.certPem, cert, canonical, sig: signCanonical(secret, canonical) };
  });
  return {
    description: 'Forwarded-header signature vectors (PROTOCOL.md section 6): inputs, canonical string and base64url HMAC-SHA256. The secrets are test-only.',
    generatedBy: 'scripts/make-forwarded-vectors.ts',
    vectors,
  };
}

async function main(): Promise<void> {
  const out = resolve(process.argv[2] ?? 'test/vectors/forwarded.json');
  const file = await makeForwardedVectors();
  writeFileSync(out, JSON.stringify(file, null, 2) + '\n');
  process.stderr.write(`wrote ${file.vectors.length} vectors to ${out}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });
}
