/**
 * Child-process entry for the two tiny servers of the benchmark, each in its own process so
 * neither shares an event loop with the gate or the load generator:
 *
 * - `upstream`: node:http answering every request with a small JSON (the protected API that
 *   the gate and the nginx baseline both proxy to);
 * - `tls-baseline`: node:https with `requestCert` + `rejectUnauthorized` (the same server
 *   certificate and client CA as the gate) answering immediately: the "Node mTLS
 *   new-connection rate alone" that the full challenge/token flow is compared with.
 *
 * Usage (forked with IPC): `servers.ts upstream|tls-baseline`; TLS files from BENCH_TLS_CERT,
 * BENCH_TLS_KEY, BENCH_CLIENT_CA. Sends `{ type: 'ready', port }` once listening.
 * @module
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

const mode = process.argv[2];

function answer(req: IncomingMessage, res: ServerResponse): void {
  // Drain any body, then a small JSON answer (about 60 bytes).
  req.resume();
  req.on('end', () => {
    const body = JSON.stringify({ ok: true, method: req.method, agent: req.headers['x-agent-id'] ?? null });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
}

const server =
  mode === 'upstream'
    ? createHttpServer(answer)
    : mode === 'tls-baseline'
      ? createHttpsServer(
          {
            cert: readFileSync(env('BENCH_TLS_CERT')),
            key: readFileSync(env('BENCH_TLS_KEY')),
            ca: readFileSync(env('BENCH_CLIENT_CA')),
            requestCert: true,
            rejectUnauthorized: true,
          },
          answer,
        )
      : undefined;
if (!server) {
  process.stderr.write(`usage: servers.ts upstream|tls-baseline (got ${String(mode)})\n`);
  process.exit(2);
}
// Longer than nginx's upstream keepalive_timeout (60 s) so nginx never reuses a connection
// this server is closing; no per-connection request cap.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 70_000;
server.maxRequestsPerSocket = 0;
server.listen(0, '127.0.0.1', () => {
  const port = (server.address() as AddressInfo).port;
  process.send?.({ type: 'ready', port });
});
// The orchestrator going away (IPC closed) ends this process too.
process.on('disconnect', () => process.exit(0));
