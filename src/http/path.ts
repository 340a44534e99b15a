/**
 * Request-path policy of PROTOCOL.md (preamble): paths are judged after percent-decoding,
 * and anything the gate and the upstream could read differently is refused.
 * @module
 */
import { GateError } from '../errors.js';

/**
 * Returns the percent-decoded path of a raw request target, or throws `request_malformed`
 * for `.`/`..` segments (also when followed by `;` path parameters, as in `..;x`), an encoded
 * `/` or `\\`, a NUL (raw or encoded), a raw `#` or `\\`, a leading `//`, or bad
 * percent-encoding.
 */
export function decodeRequestPath(rawUrl: string): string {
  const q = rawUrl.indexOf('?');
  const raw = q === -1 ? rawUrl : rawUrl.slice(0, q);
  if (!raw.startsWith('/')) throw new GateError('request_malformed', { detail: 'request target is not an absolute path' });
  if (raw.includes('\0')) throw new GateError('request_malformed', { detail: 'NUL in path' });
  // A raw '#' or '\\' is read differently by URL parsers upstream (fragment; '\\' as '/'),
  // so the gate and the upstream could disagree about the path.
  if (rawUrl.includes('#') || raw.includes('\\')) throw new GateError('request_malformed', { detail: 'raw # in target or \\ in path' });
  // A path starting with '//' reads as an authority to URL parsers ('//host/path').
  if (raw.startsWith('//')) throw new GateError('request_malformed', { detail: 'path starts with //' });
  // An encoded '\\' is read as '/' by upstreams that decode before splitting (IIS, some Java
  // and Python stacks), like an encoded '/'.
  if (/%2f|%5c|%00/i.test(raw)) throw new GateError('request_malformed', { detail: 'encoded /, \\ or NUL in path' });
  let decoded: string;
  try {
    decoded = raw.includes('%') ? decodeURIComponent(raw) : raw;
  } catch {
    throw new GateError('request_malformed', { detail: 'bad percent-encoding in path' });
  }
  if (decoded.includes('\0')) throw new GateError('request_malformed', { detail: 'NUL in path' });
  for (const seg of decoded.split('/')) {
    // Servlet containers (Tomcat, Jetty) and Spring drop ';' path parameters before resolving
    // dot segments, so '/a/..;x/b' reaches them as '/b': judge the part before the first ';'.
    const semi = seg.indexOf(';');
    const bare = semi === -1 ? seg : seg.slice(0, semi);
    if (bare === '.' || bare === '..') throw new GateError('request_malformed', { detail: 'dot segment in path' });
  }
  return decoded;
}

/** True when decoded `path` is the prefix `P` itself or below it. */
export function isGatePath(path: string, prefix: string): boolean {
  return path === prefix || path.startsWith(prefix + '/');
}
