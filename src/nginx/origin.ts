/**
 * The origins `agent-gate nginx-config` points nginx at (`--gate-url`, `--upstream-url`).
 * @module
 */

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
