/**
 * The origins `agent-gate nginx-config` points nginx at (`--gate-url`, `--upstream-url`).
 * @module
 */
import { isIP } from 'node:net';
import { pemFile } from './render.js';

const DNS_NAME_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** An http(s) origin as nginx's configuration needs it. */
export interface Origin {
  scheme: 'http' | 'https';
  /** host:port for an upstream block, IPv6 in brackets. */
  server: string;
  /** host without brackets. */
  host: string;
  /** scheme://host:port, the port always written. */
  url: string;
}

/** How the refusals that differ per option end: after `is`, after `must be`, and after the origin rule. */
export interface OriginWording {
  required: string;
  schemes: string;
  originOnly: string;
}

/** Parses the option `flag` as an http(s) origin: no credentials, path, query or fragment; the scheme's port when none is given. */
export function parseOrigin(flag: string, value: unknown, words: OriginWording): Origin {
  if (typeof value !== 'string' || value.length === 0) throw new TypeError(`${flag} is ${words.required}`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`${flag} is not a URL: ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new TypeError(`${flag} must be ${words.schemes}, got ${url.protocol}`);
  if (url.username || url.password) throw new TypeError(`${flag} must not carry credentials`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) throw new TypeError(`${flag} must be an origin (scheme://host:port)${words.originOnly}`);
  const scheme = url.protocol === 'https:' ? 'https' : 'http';
  const port = url.port || (scheme === 'https' ? '443' : '80');
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { scheme, server: `${url.hostname}:${port}`, host, url: `${scheme}://${url.hostname}:${port}` };
}

/** The option names of one origin's TLS settings; `dnsOnly` ends the refusal of a TLS name that is not a DNS name. */
export interface OriginTlsFlags {
  url: string;
  ca: string;
  tlsName: string;
  dnsOnly: string;
}

/** Checks the CA file and TLS name given for `origin` (https only): the CA's PEM and the lower-cased name, each undefined when not given. */
export async function originTls(origin: Origin, flags: OriginTlsFlags, ca: unknown, tlsName: unknown): Promise<{ ca?: string; tlsName?: string }> {
  let caPem: string | undefined;
  if (ca !== undefined) {
    if (origin.scheme !== 'https') throw new TypeError(`${flags.ca} needs an https ${flags.url}`);
    caPem = await pemFile(flags.ca, ca, 'CERTIFICATE');
  }
  let name: string | undefined;
  if (tlsName !== undefined) {
    if (origin.scheme !== 'https') throw new TypeError(`${flags.tlsName} needs an https ${flags.url}`);
    if (typeof tlsName !== 'string' || !DNS_NAME_RE.test(tlsName) || isIP(tlsName) !== 0) {
      throw new TypeError(`${flags.tlsName} must be a DNS name${flags.dnsOnly}, got ${JSON.stringify(tlsName)}`);
    }
    name = tlsName.toLowerCase();
  }
  return { ca: caPem, tlsName: name };
}
