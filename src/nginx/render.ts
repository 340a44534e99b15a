/**
 * `agent-gate nginx-config` (PROTOCOL.md section 12): renders the nginx configuration that
 * puts nginx in front of a gate in forwarded mode (section 6) from the package's template
 * `nginx/agent-gate.conf` and njs signer `nginx/gate_sign.js`.
 *
 * Writes into DIR: `nginx.conf`, `gate_sign.js` and `gate_fwd_key.json` (mode 0600, the HMAC
 * key for `js_preload_object`: the master reads it at configuration load, the unprivileged
 * workers never open it). The result runs as
 * `nginx -p DIR -c DIR/nginx.conf -g 'daemon off; pid DIR/nginx.pid;'`.
 * @module
 */
import { readFile, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { DEFAULT_MAX_CONNECTIONS_PER_ADDRESS } from '../http/connections.js';
import { parseHmacKeys } from '../identity/forwarded-canonical.js';
import { authorizerValues, parseMode, type AuthorizerNginxOptions, type NginxMode } from './authorizer.js';
import { writeFileAtomic } from '../pki/files.js';
import { originTls, parseOrigin, type Origin } from './origin.js';
import { prepareOutputDir } from './write.js';

export type { AuthorizerNginxOptions, NginxMode } from './authorizer.js';

/** Where Debian's libnginx-mod-http-js installs the njs module (nginx's --modules-path). */
export const NJS_MODULE_PATH = '/usr/lib/nginx/modules/ngx_http_js_module.so';

/** File names written into DIR. */
export const NGINX_FILES = { conf: 'nginx.conf', js: 'gate_sign.js', key: 'gate_fwd_key.json' } as const;

/** The default gate path prefix `P` (`GATE_PATH_PREFIX`). */
export const DEFAULT_PATH_PREFIX = '/.agent-gate';

/** Inputs of {@link renderNginxConfig}; file names may be relative to the working directory. */
export interface NginxConfigOptions {
  /** `HOST:PORT` nginx listens on (`[v6]:PORT` for IPv6, `*:PORT` for all addresses). */
  listen: string;
  /** The gate's origin: `https://host:port` (or `http://` in dev), no path. */
  gateUrl: string;
  /** nginx's server certificate chain (PEM). */
  tlsCert: string;
  /** nginx's server key (PEM). */
  tlsKey: string;
  /** PEM bundle of the CAs trusted to issue agent certificates (the gate's GATE_CLIENT_CA). */
  clientCa: string;
  /** File holding the base64 HMAC secret, as in GATE_FWD_HMAC_KEYS (at least 32 bytes). */
  hmacKeyFile: string;
  /** Key id of that secret in GATE_FWD_HMAC_KEYS. */
  kid: string;
  /** Output directory (created when missing). */
  dir: string;
  /** The gate's path prefix `P` (default `/.agent-gate`). */
  pathPrefix?: string;
  /** CA bundle that verifies the gate's certificate (https gate URLs). */
  gateCa?: string;
  /** DNS name to verify the gate's certificate against (and send as SNI); default the URL's host. */
  gateTlsName?: string;
  /** Minimum TLS version offered to agents (default TLSv1.2). */
  tlsMinVersion?: 'TLSv1.2' | 'TLSv1.3';
  /**
   * nginx's `limit_conn` per client address (default {@link DEFAULT_MAX_CONNECTIONS_PER_ADDRESS},
   * the gate's own per-address cap in direct mode, which does not apply behind nginx).
   */
  maxConnectionsPerAddress?: number;
  /** forwarded (default: nginx → gate → upstream) or authorizer (nginx → upstream, the gate decides; section 13). */
  mode?: NginxMode;
  /** Authorizer mode: the authorizer options (see {@link AuthorizerNginxOptions}). */
  authorizer?: AuthorizerNginxOptions;
}

/** What {@link renderNginxConfig} wrote. */
export interface RenderedNginxConfig {
  confPath: string;
  jsPath: string;
  keyPath: string;
  /** Conditions worth a warning that do not stop rendering (unverified gate TLS, ...). */
  warnings: string[];
}

const LISTEN_RE = /^(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):([0-9]{1,5})$/;
const PATH_PREFIX_RE = /^\/[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*$/;
// Characters that would end or change a quoted nginx argument ($ starts a variable in ssl_certificate).
const UNSAFE_PATH_RE = /["'\\${};]/;

function hasControl(s: string): boolean {
  return [...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);
}

function templateUrl(name: string): URL {
  // src/nginx/render.ts (tsx) and dist/nginx/render.js both sit two levels below the package root.
  return new URL(`../../nginx/${name}`, import.meta.url);
}

/** An absolute path nginx.conf can carry in double quotes; TypeError naming `flag` otherwise. */
export function safePath(flag: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw new TypeError(`${flag} is required`);
  const abs = resolve(value);
  if (UNSAFE_PATH_RE.test(abs) || hasControl(abs)) throw new TypeError(`${flag} ${JSON.stringify(value)} contains a character nginx.conf cannot carry (quote, backslash, $, {, }, ; or a control character)`);
  return abs;
}

/** A readable PEM file of `label`; TypeError naming `flag` otherwise. */
export async function pemFile(flag: string, value: unknown, label: 'CERTIFICATE' | 'PRIVATE KEY'): Promise<string> {
  const path = safePath(flag, value);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new TypeError(`${flag} ${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const ok = label === 'CERTIFICATE' ? /-----BEGIN CERTIFICATE-----/.test(text) : /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
  if (!ok) throw new TypeError(`${flag} ${path}: no PEM ${label.toLowerCase()} in it`);
  return path;
}

function parseListen(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw new TypeError('--listen is required (HOST:PORT)');
  const m = LISTEN_RE.exec(value);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65535) throw new TypeError(`--listen must be HOST:PORT (IPv6 as [addr]:PORT, port 1-65535), got ${JSON.stringify(value)}`);
  const host = m[1]!;
  if (host.startsWith('[') && isIP(host.slice(1, -1)) !== 6) throw new TypeError(`--listen: ${host} is not an IPv6 address`);
  return value;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Reads and checks the key file; returns the secret as standard base64 (njs decodes no base64url). */
async function readSecret(file: string, kid: unknown): Promise<{ kid: string; secret: string }> {
  if (typeof kid !== 'string' || kid.length === 0) throw new TypeError('--kid is required');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new TypeError(`--hmac-key-file ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const b64 = text.trim();
  if (b64.length === 0) throw new TypeError(`--hmac-key-file ${file} is empty`);
  if (/[\s,:]/.test(b64)) throw new TypeError(`--hmac-key-file ${file} must hold only the base64 secret (as in GATE_FWD_HMAC_KEYS), on one line`);
  let keys: Map<string, Buffer>;
  try {
    keys = parseHmacKeys(`${kid}:${b64}`);
  } catch (err) {
    // The kid here is --kid (an argument, not a swapped secret): name it.
    const why = (err as Error).message
      .replace(/^entry 1: the kid /, `--kid ${JSON.stringify(kid)} `)
      .replace(/^entry 1: /, '')
      .replace(/ \(kid first, then the secret\)$/, '');
    throw new TypeError(`--hmac-key-file ${file} / --kid: ${why}`);
  }
  return { kid, secret: keys.get(kid)!.toString('base64') };
}

function parsePathPrefix(value: unknown): string {
  if (value === undefined) return DEFAULT_PATH_PREFIX;
  if (typeof value !== 'string' || !PATH_PREFIX_RE.test(value) || value.split('/').some((s) => s === '.' || s === '..')) {
    throw new TypeError(`--path-prefix must be /segment[/segment] of [A-Za-z0-9._~-], no trailing slash, no . or .. segments (as GATE_PATH_PREFIX), got ${JSON.stringify(value)}`);
  }
  return value;
}

function sslProtocols(value: unknown): string {
  if (value === undefined || value === 'TLSv1.2') return 'TLSv1.2 TLSv1.3';
  if (value === 'TLSv1.3') return 'TLSv1.3';
  throw new TypeError(`--tls-min-version must be TLSv1.2 or TLSv1.3, got ${JSON.stringify(value)}`);
}

/** The proxy_ssl_* lines for an https gate. */
function gateTlsBlock(gate: Origin, gateCa: string | undefined, tlsName: string | undefined): string {
  if (gate.scheme === 'http') return '        # The gate is reached over plain HTTP (dev only: use an https --gate-url elsewhere).';
  const name = tlsName ?? gate.host;
  const lines = [
    '        # The gate over TLS, on kept-alive connections.',
    '        proxy_ssl_protocols TLSv1.2 TLSv1.3;',
    '        proxy_ssl_session_reuse on;',
    // nginx sends no SNI for an IP address by itself.
    '        proxy_ssl_server_name on;',
    `        proxy_ssl_name ${name};`,
  ];
  if (gateCa) {
    lines.push(
      '        # Verify the gate: chain to --gate-ca, and the DNS name above (nginx checks DNS names only).',
      '        proxy_ssl_verify on;',
      `        proxy_ssl_trusted_certificate "${gateCa}";`,
      '        proxy_ssl_verify_depth 4;',
    );
  } else {
    lines.push('        # NOT verifying the gate\'s certificate (no --gate-ca given).', '        proxy_ssl_verify off;');
  }
  return lines.join('\n');
}

function limitConn(value: unknown): string {
  if (value === undefined) return String(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS);
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 1_000_000) {
    throw new TypeError(`--max-connections-per-address must be a whole number from 1 to 1000000, got ${JSON.stringify(value)}`);
  }
  return String(value);
}

function fill(template: string, values: Record<string, string>): string {
  const out = template.replace(/\{\{([A-Z_]+)\}\}/g, (whole, name: string) => {
    const v = values[name];
    if (v === undefined) throw new Error(`nginx template has an unknown placeholder ${whole}`);
    return v;
  });
  return out;
}

/** Ancestors of `dir` that others cannot search (the workers, as nobody, could not reach DIR/temp). */
async function unsearchableAncestors(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (let d = dirname(dir); ; d = dirname(d)) {
    try {
      if (((await stat(d)).mode & 0o001) === 0) out.push(d);
    } catch {
      // unreadable: reported by nginx itself
    }
    if (dirname(d) === d) break;
  }
  return out;
}

/**
 * Validates `opts` (TypeError with a message naming the flag), then writes DIR/nginx.conf,
 * DIR/gate_sign.js and the 0600 key copy DIR/gate_fwd_key.json.
 */
export async function renderNginxConfig(opts: NginxConfigOptions): Promise<RenderedNginxConfig> {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('options are required');
  const warnings: string[] = [];
  const listen = parseListen(opts.listen);
  const gate = parseOrigin('--gate-url', opts.gateUrl, { required: 'required', schemes: 'https:// (or http:// in dev)', originOnly: ', without path, query or fragment' });
  const dir = safePath('--dir', opts.dir);
  const tlsCert = await pemFile('--tls-cert', opts.tlsCert, 'CERTIFICATE');
  const tlsKey = await pemFile('--tls-key', opts.tlsKey, 'PRIVATE KEY');
  const clientCa = await pemFile('--client-ca', opts.clientCa, 'CERTIFICATE');
  const key = await readSecret(safePath('--hmac-key-file', opts.hmacKeyFile), opts.kid);
  const pathPrefix = parsePathPrefix(opts.pathPrefix);
  const protocols = sslProtocols(opts.tlsMinVersion);

  const { ca: gateCa, tlsName } = await originTls(gate, { url: '--gate-url', ca: '--gate-ca', tlsName: '--gate-tls-name', dnsOnly: ' (nginx verifies DNS names only)' }, opts.gateCa, opts.gateTlsName);
  if (gate.scheme === 'https' && gateCa && !tlsName && isIP(gate.host) !== 0) {
    throw new TypeError(`--gate-url names the IP address ${gate.host} and nginx verifies DNS names only: give --gate-tls-name with a DNS name of the gate's certificate`);
  }
  if (gate.scheme === 'https' && !gateCa) warnings.push("the gate's TLS certificate is not verified: give --gate-ca (and --gate-tls-name) outside dev");
  if (gate.scheme === 'http' && !isLoopback(gate.host)) warnings.push('the gate is reached over plain HTTP on a non-loopback address: use an https --gate-url outside dev');

  const mode = parseMode(opts.mode);
  const authz = mode === 'authorizer' ? await authorizerValues(opts.authorizer, pathPrefix, warnings) : undefined;
  const templateName = mode === 'authorizer' ? 'agent-gate-authorizer.conf' : 'agent-gate.conf';
  const [template, signer] = await Promise.all([readFile(templateUrl(templateName), 'utf8'), readFile(templateUrl('gate_sign.js'), 'utf8')]);

  // DIR will hold the HMAC secret: the caller's own, closed to others (search only, for the workers).
  await prepareOutputDir(dir);
  const blocked = await unsearchableAncestors(dir);
  if (blocked.length > 0) {
    warnings.push(`${blocked.join(', ')} cannot be searched by others: when nginx starts as root its workers (nobody) cannot reach ${dir}/temp; chmod o+x or choose another --dir`);
  }

  const keyPath = resolve(dir, NGINX_FILES.key);
  const jsPath = resolve(dir, NGINX_FILES.js);
  const confPath = resolve(dir, NGINX_FILES.conf);
  const conf = fill(template, {
    DIR: dir,
    KEY_FILE: keyPath,
    LISTEN: listen,
    TLS_CERT: tlsCert,
    TLS_KEY: tlsKey,
    CLIENT_CA: clientCa,
    SSL_PROTOCOLS: protocols,
    PATH_PREFIX: pathPrefix,
    // P as a regular expression ('.' is its only character of [A-Za-z0-9._~-] PCRE reads specially).
    PATH_PREFIX_RE: pathPrefix.replace(/\./g, '\\.'),
    GATE_SERVER: gate.server,
    GATE_SCHEME: gate.scheme,
    GATE_TLS: gateTlsBlock(gate, gateCa, tlsName),
    LIMIT_CONN: limitConn(opts.maxConnectionsPerAddress),
    ...authz?.(dir),
  });

  // The key first, so a config never points at a missing or stale key; 0600 even if it existed.
  await writeFileAtomic(keyPath, JSON.stringify(key) + '\n', 0o600);
  await writeFileAtomic(jsPath, signer, 0o644);
  await writeFileAtomic(confPath, conf, 0o644);
  return { confPath, jsPath, keyPath, warnings };
}
