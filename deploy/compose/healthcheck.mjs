/**
 * The agent-gate image's HEALTHCHECK: exit 0 when the gate in this container answers 200 to
 * `GET /healthz` on its admin listener (process alive; readiness is `/readyz`'s job), 1 otherwise.
 *
 * Reads the same GATE_* variables as the gate: the admin listener is GATE_ADMIN_LISTEN (default
 * 127.0.0.1:9464), HTTP on loopback, HTTPS when GATE_ADMIN_TLS_CERT/_KEY are set. An admin
 * listener with GATE_ADMIN_CLIENT_CA refuses the handshake to anyone without an admin client
 * certificate, so then the public listener's `P/healthz` is asked instead (it needs no client
 * certificate). Certificates are not verified: the probe talks to its own container over
 * loopback and sends nothing secret. Needs nothing but node (no curl or wget in the image).
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import process from 'node:process';

const TIMEOUT_MS = 3000;
// A container probe, not gate code: it reads the gate's GATE_* variables like the gate does.
// eslint-disable-next-line no-restricted-properties
const env = process.env;

/** host and port of a GATE_*LISTEN value; a wildcard host becomes the matching loopback. */
function local(listen, fallback) {
  const value = listen || fallback;
  const i = value.lastIndexOf(':');
  const host = value.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(value.slice(i + 1));
  if (host === '0.0.0.0' || host === '') return { host: '127.0.0.1', port };
  if (host === '::') return { host: '::1', port };
  return { host, port };
}

function target() {
  if (!env.GATE_ADMIN_CLIENT_CA) {
    return { ...local(env.GATE_ADMIN_LISTEN, '127.0.0.1:9464'), tls: Boolean(env.GATE_ADMIN_TLS_CERT && env.GATE_ADMIN_TLS_KEY), path: '/healthz' };
  }
  const prefix = env.GATE_PATH_PREFIX || '/.agent-gate';
  return { ...local(env.GATE_LISTEN, '0.0.0.0:8443'), tls: Boolean(env.GATE_TLS_CERT), path: `${prefix}/healthz` };
}

const t = target();
const request = t.tls ? httpsRequest : httpRequest;
const req = request(
  { host: t.host, port: t.port, path: t.path, method: 'GET', timeout: TIMEOUT_MS, rejectUnauthorized: false, headers: { 'user-agent': 'agent-gate-healthcheck' } },
  (res) => {
    res.resume();
    process.exit(res.statusCode === 200 ? 0 : 1);
  },
);
req.on('timeout', () => {
  process.stderr.write(`healthcheck: ${t.tls ? 'https' : 'http'}://${t.host}:${t.port}${t.path} timed out\n`);
  process.exit(1);
});
req.on('error', (err) => {
  process.stderr.write(`healthcheck: ${t.tls ? 'https' : 'http'}://${t.host}:${t.port}${t.path}: ${err.message}\n`);
  process.exit(1);
});
req.end();
