/**
 * An OCSP responder over HTTP for the dev CA (RFC 6960 appendix A), so staging can run
 * revocation end to end without other software. It reads the CA database on every request,
 * so a `pki revoke` shows up in the next answer without a restart.
 * @module
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isIPv6 } from 'node:net';
import { join, resolve } from 'node:path';
import { readCaDatabase, type CaDbEntry } from './ca-db.js';
import { loadKeyAndCert } from './files.js';
import type { KeyAndCert } from './issue.js';
import { buildOcspErrorResponse, buildOcspResponse, isOcspRequest, type OcspCertStatus, type OcspLookup } from './ocsp.js';

/** Largest request body read, as PROTOCOL.md section 7 bounds responses: no real OCSPRequest comes close. */
const MAX_BODY_BYTES = 64 * 1024;
// Generous for loopback and staging, short enough that a stuck client cannot hold a socket long.
const REQUEST_TIMEOUT_MS = 10_000;

/** Options of {@link startOcspResponder}. */
export interface OcspResponderOptions {
  /** A dev PKI directory: its CA (unless `issuer`) and its `index.txt` (unless `lookup`), re-read per request. */
  dir?: string;
  issuer?: KeyAndCert;
  /** Delegated responder certificate and key; default: the issuer signs. */
  signer?: KeyAndCert;
  /** Default 127.0.0.1: nothing outside the machine unless asked for. */
  host?: string;
  /** Default 0: any free port, see the returned `port`. */
  port?: number;
  /** Seconds from thisUpdate to nextUpdate; default 300. */
  nextUpdateS?: number;
  /** Status source instead of `<dir>/index.txt`. */
  lookup?: OcspLookup;
}

/** A running responder. */
export interface OcspResponder {
  /** Base URL, e.g. `http://127.0.0.1:40123/`: what goes in certificates' AIA and `openssl ocsp -url`. */
  url: string;
  port: number;
  /** OCSP responses sent so far, error responses included. */
  readonly requests: number;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** The status of each serial as the database says; expired certificates were never revoked, so `good`. */
export function lookupFromEntries(entries: readonly CaDbEntry[]): OcspLookup {
  const bySerial = new Map(entries.map((e) => [e.serial, e]));
  return (serial: string): OcspCertStatus => {
    const e = bySerial.get(serial);
    if (!e) return { status: 'unknown' };
    if (e.status === 'revoked') return { status: 'revoked', revokedAt: e.revokedAt ?? new Date(0), ...(e.reason ? { reason: e.reason } : {}) };
    return { status: 'good' };
  };
}

/**
 * The OCSPRequest carried by a GET path: `/<url-encoded base64 DER>`. Encoders disagree on
 * whether `/` inside the base64 gets percent-encoded and on the alphabet, and the responder may
 * sit under a path prefix, so every suffix after a `/` is tried (Node's base64 decoder takes
 * both alphabets); the first that parses as a request wins. Empty when none does.
 */
function requestFromPath(path: string): Buffer {
  const clean = path.split('?')[0] ?? '';
  for (let i = clean.indexOf('/'); i !== -1; i = clean.indexOf('/', i + 1)) {
    let text: string;
    try {
      text = decodeURIComponent(clean.slice(i + 1));
    } catch {
      continue;
    }
    if (!/^[A-Za-z0-9+/_=-]+$/.test(text)) continue;
    const der = Buffer.from(text, 'base64');
    if (isOcspRequest(der)) return der;
  }
  return Buffer.alloc(0);
}

function readBody(req: IncomingMessage): Promise<Buffer | 'too-large'> {
  return new Promise((resolvePromise, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        done = true;
        resolvePromise('too-large');
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!done) resolvePromise(Buffer.concat(chunks));
      done = true;
    });
    // A client that goes away mid-body (or the request timeout) must not leave this pending.
    req.on('close', () => {
      if (!done) reject(new Error('request closed before its body ended'));
      done = true;
    });
    req.on('error', reject);
  });
}

/** Starts an OCSP responder: POST `application/ocsp-request` bodies and GET `/<base64>` requests. */
export async function startOcspResponder(opts: OcspResponderOptions): Promise<OcspResponder> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 0;
  if (!(Number.isInteger(port) && port >= 0 && port <= 65535)) throw new TypeError(`port must be an integer in [0, 65535], got ${port}`);
  const nextUpdateS = opts.nextUpdateS ?? 300;
  if (!(Number.isFinite(nextUpdateS) && nextUpdateS > 0)) throw new TypeError(`nextUpdateS must be a positive number, got ${nextUpdateS}`);
  if (!opts.lookup && opts.dir === undefined) throw new TypeError('startOcspResponder needs dir or lookup');
  if (!opts.issuer && opts.dir === undefined) throw new TypeError('startOcspResponder needs dir or issuer');
  const dir = opts.dir === undefined ? undefined : resolve(opts.dir);
  const issuer = opts.issuer ?? (await loadKeyAndCert(join(dir ?? '', 'ca.crt'), join(dir ?? '', 'ca.key')));

  const lookupNow = async (): Promise<OcspLookup> => opts.lookup ?? lookupFromEntries(await readCaDatabase(dir ?? ''));

  const answer = async (request: Buffer): Promise<Buffer> => {
    let lookup: OcspLookup;
    try {
      lookup = await lookupNow();
    } catch {
      // An unreadable or corrupt database: say so rather than answer from nothing.
      return buildOcspErrorResponse('internalError');
    }
    const now = new Date();
    return buildOcspResponse({
      request,
      issuer,
      signer: opts.signer,
      lookup,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + nextUpdateS * 1000),
    });
  };

  let requests = 0;
  const send = (res: ServerResponse, body: Buffer): void => {
    requests++;
    res.writeHead(200, { 'content-type': 'application/ocsp-response', 'content-length': body.length });
    res.end(body);
  };

  const server = createServer((req, res) => {
    void (async () => {
      if (req.method === 'POST') {
        // Any content type is taken: some clients send none, and the body parses or it does not.
        const body = await readBody(req);
        if (body === 'too-large') {
          // Not an OCSP answer: nothing that size is a request. The rest of the body is not
          // read; the socket closes once the reply is out.
          res.writeHead(413, { connection: 'close', 'content-type': 'text/plain' });
          res.end('OCSP request too large\n', () => req.socket.destroySoon());
          return;
        }
        send(res, await answer(body));
      } else if (req.method === 'GET') {
        send(res, await answer(requestFromPath(req.url ?? '/')));
      } else {
        res.writeHead(405, { allow: 'GET, POST', 'content-type': 'text/plain' });
        res.end('use GET or POST\n');
      }
    })().catch(() => {
      if (!res.headersSent) send(res, buildOcspErrorResponse('internalError'));
      else res.destroy();
    });
  });
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS;

  await new Promise<void>((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolvePromise();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  const url = `http://${isIPv6(host) ? `[${host}]` : host}:${bound}/`;

  return {
    url,
    port: bound,
    get requests() {
      return requests;
    },
    close: () =>
      new Promise<void>((resolvePromise) => {
        server.close(() => resolvePromise());
        server.closeAllConnections();
      }),
  };
}
