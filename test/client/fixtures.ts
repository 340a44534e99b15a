/**
 * Test fixtures for the client SDK: throwaway certificates made with openssl, and a tiny
 * real HTTPS "gate" (node:https, mTLS) implementing just enough of PROTOCOL.md sections 3-5
 * to count calls and script refusals. Real crypto throughout: proofs are verified with jose.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { compactVerify } from 'jose';
import { checkPow } from '../../src/client/pow.js';

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

/** A self-signed certificate made by `openssl req -x509` in a temp dir (removed afterwards). */
export function makeCert(kind: KeyKind, cn: string, extra: string[] = []): CertPair {
  const dir = mkdtempSync(join(tmpdir(), 'agc-cert-'));
  try {
    const keyFile = join(dir, 'key.pem');
    const certFile = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      ['req', '-x509', ...NEWKEY[kind], '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', `/CN=${cn}`, ...extra],
      { stdio: 'pipe' },
    );
    return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The gate's server certificate (IP SAN 127.0.0.1) and one agent certificate. */
export function makeTestPki(): { server: CertPair; agent: CertPair; other: CertPair } {
  return {
    server: makeCert('p256', 'test-gate', ['-addext', 'subjectAltName=IP:127.0.0.1', '-addext', 'extendedKeyUsage=serverAuth']),
    agent: makeCert('p256', 'test-agent', ['-addext', 'subjectAltName=URI:urn:agent:test', '-addext', 'extendedKeyUsage=clientAuth']),
    other: makeCert('p256', 'other-gate', ['-addext', 'subjectAltName=IP:127.0.0.1']),
  };
}

/**
 * A three-level server PKI: root CA → intermediate CA → gate leaf (IP SAN 127.0.0.1).
 * `chain` is leaf + intermediate, what the gate presents; clients trust `root.cert`.
 */
export interface ChainPki {
  root: CertPair;
  intermediate: CertPair;
  leaf: CertPair;
  chain: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** Makes a {@link ChainPki} with openssl in a temp dir (removed afterwards). */
export function makeChainPki(): ChainPki {
  const dir = mkdtempSync(join(tmpdir(), 'agc-chain-'));
  try {
    const read = (f: string) => readFileSync(join(dir, f), 'utf8');
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl(dir, ['req', '-x509', ...ec, '-keyout', 'root.key', '-out', 'root.crt', '-days', '1', '-subj', '/CN=Test Root',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    openssl(dir, ['req', '-new', ...ec, '-keyout', 'int.key', '-out', 'int.csr', '-subj', '/CN=Test Intermediate']);
    writeFileSync(join(dir, 'int.ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n');
    openssl(dir, ['x509', '-req', '-in', 'int.csr', '-CA', 'root.crt', '-CAkey', 'root.key', '-CAcreateserial', '-out', 'int.crt', '-days', '1', '-extfile', 'int.ext']);
    openssl(dir, ['req', '-new', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=chained-gate']);
    writeFileSync(join(dir, 'leaf.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
    openssl(dir, ['x509', '-req', '-in', 'leaf.csr', '-CA', 'int.crt', '-CAkey', 'int.key', '-CAcreateserial', '-out', 'leaf.crt', '-days', '1', '-extfile', 'leaf.ext']);
    const leaf = { cert: read('leaf.crt'), key: read('leaf.key') };
    const intermediate = { cert: read('int.crt'), key: read('int.key') };
    return { root: { cert: read('root.crt'), key: read('root.key') }, intermediate, leaf, chain: leaf.cert + intermediate.cert };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * An attacker's server certificate for the pin test: `leaf` (IP SAN 127.0.0.1) is properly
 * issued by `ca` (a CA the victim trusts, e.g. a compromised one); `decoy` claims to be that
 * CA (same subject name) but carries `pinnedKeyOf`'s public key and a signature by an
 * unrelated key. Presenting leaf + decoy makes Node's displayed chain show the pinned key
 * above the leaf, although no valid signature links them.
 */
export function makeDecoyChain(pinnedKeyOf: CertPair): { ca: CertPair; leaf: CertPair; chain: string } {
  const dir = mkdtempSync(join(tmpdir(), 'agc-decoy-'));
  try {
    const read = (f: string) => readFileSync(join(dir, f), 'utf8');
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    writeFileSync(join(dir, 'pinned.crt'), pinnedKeyOf.cert);
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
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What a scripted handler answers. */
export interface Reply {
  /** Drop the connection instead of answering. */
  destroy?: boolean;
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

/** What a hook returns: a reply, or undefined for the default behaviour, maybe later. */
export type Hooked = Reply | undefined | Promise<Reply | undefined>;

export interface GateRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
  /** The upstream call number (1-based) for upstream paths. */
  n: number;
}

export function problem(status: number, code: string, headers: Record<string, string> = {}): Reply {
  return {
    status,
    headers: { 'content-type': 'application/problem+json', 'cache-control': 'no-store', ...headers },
    body: JSON.stringify({
      type: `urn:agent-gate:error:${code}`,
      title: code,
      status,
      code,
      instance: `urn:agent-gate:refusal:${code.replace(/_/g, '')}${status}`,
    }),
  };
}

export const PREFIX = '/.agent-gate';
export const AUD = 'test-audience';

/** A minimal gate. Hooks return a Reply to override the default behaviour, or undefined. */
export class TestGate {
  readonly server: Server;
  url = '';
  calls = { challenge: 0, token: 0, upstream: 0 };
  /** TLS connections accepted, and how many of them resumed a session. */
  tls = { connections: 0, resumed: 0 };
  /** TCP connections accepted (counted before any TLS handshake). */
  tcp = 0;
  tokenTtlS = 300;
  pow: { alg: string; difficulty: number } | null = null;
  algs = ['EdDSA', 'ES256', 'ES384', 'PS256'];
  /** Hooks may be async (to hold an answer back); undefined means the default behaviour. */
  onChallenge: ((n: number) => Hooked) | undefined;
  onToken: ((n: number) => Hooked) | undefined;
  onUpstream: ((req: GateRequest) => Hooked) | undefined;
  /** Upstream requests, in order. */
  upstreamLog: GateRequest[] = [];
  /** Proofs accepted, decoded. */
  proofs: { header: Record<string, unknown>; payload: Record<string, unknown> }[] = [];
  readonly validTokens = new Set<string>();
  readonly #challenges = new Map<string, { nonce: string }>();
  #tokenSeq = 0;

  constructor(pki: { server: CertPair; agent: CertPair }) {
    this.server = createServer(
      {
        cert: pki.server.cert,
        key: pki.server.key,
        ca: pki.agent.cert,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
      },
      (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          this.#handle(req, Buffer.concat(chunks)).then(
            (reply) => send(res, reply),
            (err: unknown) => send(res, { status: 500, body: String(err) }),
          );
        });
      },
    );
    this.server.on('connection', () => {
      this.tcp++;
    });
    this.server.on('secureConnection', (sock: TLSSocket) => {
      this.tls.connections++;
      if (sock.isSessionReused()) this.tls.resumed++;
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  async #handle(req: IncomingMessage, body: Buffer): Promise<Reply> {
    const path = req.url ?? '/';
    const method = req.method ?? 'GET';
    const sock = req.socket as TLSSocket;
    if (!sock.authorized) return problem(401, 'client_cert_required');
    if (path === `${PREFIX}/v1/challenge` && method === 'POST') {
      this.calls.challenge++;
      return (await this.onChallenge?.(this.calls.challenge)) ?? this.#challenge();
    }
    if (path === `${PREFIX}/v1/token` && method === 'POST') {
      this.calls.token++;
      return (await this.onToken?.(this.calls.token)) ?? (await this.#token(sock, req, body));
    }
    if (path.startsWith(`${PREFIX}/`)) return problem(404, 'not_found');
    this.calls.upstream++;
    const gr: GateRequest = { method, path, headers: req.headers, body, n: this.calls.upstream };
    this.upstreamLog.push(gr);
    const scripted = await this.onUpstream?.(gr);
    if (scripted) return scripted;
    const auth = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/i.exec(auth);
    if (!m) return problem(401, 'token_missing', { 'www-authenticate': 'Bearer realm="agent-gate"' });
    if (!this.validTokens.has(m[1]!)) {
      return problem(401, 'token_invalid', { 'www-authenticate': 'Bearer realm="agent-gate", error="invalid_token"' });
    }
    return {
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ method, path, token: m[1], body: body.toString('utf8'), xtest: req.headers['x-test'] ?? null }),
    };
  }

  #challenge(): Reply {
    const challenge_id = randomBytes(16).toString('base64url');
    const nonce = randomBytes(32).toString('base64url');
    this.#challenges.set(challenge_id, { nonce });
    const now = Date.now();
    return {
      status: 201,
      headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
      body: JSON.stringify({ challenge_id, nonce, aud: AUD, issued_at: now, expires_at: now + 3000, algs: this.algs, pow: this.pow }),
    };
  }

  async #token(sock: TLSSocket, req: IncomingMessage, body: Buffer): Promise<Reply> {
    if (!/^application\/json\b/i.test(req.headers['content-type'] ?? '')) return problem(415, 'unsupported_media_type');
    let doc: { challenge_id?: unknown; proof?: unknown; work?: unknown };
    try {
      doc = JSON.parse(body.toString('utf8')) as typeof doc;
    } catch {
      return problem(400, 'request_malformed');
    }
    if (typeof doc.challenge_id !== 'string' || typeof doc.proof !== 'string') return problem(400, 'request_malformed');
    const ch = this.#challenges.get(doc.challenge_id);
    if (!ch) return problem(404, 'challenge_unknown');
    this.#challenges.delete(doc.challenge_id);
    if (this.pow && (typeof doc.work !== 'string' || !checkPow(ch.nonce, this.pow.difficulty, doc.work))) {
      return problem(403, 'pow_invalid');
    }
    const peer = sock.getPeerX509Certificate();
    if (!peer) return problem(401, 'client_cert_required');
    try {
      const { payload, protectedHeader } = await compactVerify(doc.proof, peer.publicKey, { algorithms: this.algs });
      const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
      if (protectedHeader.typ !== 'agent-gate-proof+jwt') throw new Error('typ');
      if (claims.cid !== doc.challenge_id || claims.nonce !== ch.nonce || claims.aud !== AUD) throw new Error('claims');
      if (typeof claims.iat !== 'number' || Math.abs(claims.iat - Date.now() / 1000) > 30) throw new Error('iat');
      this.proofs.push({ header: protectedHeader as Record<string, unknown>, payload: claims });
    } catch {
      return problem(403, 'proof_invalid');
    }
    const access_token = `tok-${++this.#tokenSeq}`;
    this.validTokens.add(access_token);
    return {
      status: 200,
      headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
      body: JSON.stringify({ access_token, token_type: 'Bearer', expires_in: this.tokenTtlS }),
    };
  }
}

function send(res: ServerResponse, reply: Reply): void {
  if (reply.destroy) {
    res.socket?.destroy();
    return;
  }
  res.writeHead(reply.status, reply.headers ?? {});
  res.end(reply.body ?? '');
}
