/**
 * `npx tsx load/bench/identity-ab.ts DIR_A DIR_B [--resumed]`: CPU of `DirectIdentityResolver.resolve` on
 * each new mTLS connection of a returning agent (one ECDSA P-256 agent, 300 fresh server-side
 * sockets, the chain verified once before timing), for two builds (`DIR/dist/identity/`) side
 * by side in one process, 6 alternating rounds, median µs per connection (process.cpuUsage).
 * `--resumed`: every connection resumes the first one's TLS session, as the SDK's do. DIR_B runs
 * second in every round, and with the same code measured ~10 µs more than DIR_A (2026-12-08):
 * run both orders.
 * @module
 */
import { createServer, connect, type TLSSocket } from 'node:tls';
import { createCa, issueAgentCert, issueServerCert } from '../../src/pki/index.js';
const [dirA, dirB] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const RESUMED = process.argv.includes('--resumed');
const load = async (d: string) => ({
  R: (await import(`${d}/dist/identity/direct.js`)).DirectIdentityResolver,
  T: (await import(`${d}/dist/identity/certificate.js`)).TrustBundle,
});
const A = await load(dirA!), B = await load(dirB!);
const ca = await createCa();
const server = await issueServerCert(ca);
const agent = await issueAgentCert(ca, 'm', { alg: 'ec-p256' });
const srv = createServer({ key: server.keyPem, cert: server.certPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: false });
const socks: TLSSocket[] = [];
srv.on('secureConnection', (s) => socks.push(s));
await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
const port = (srv.address() as { port: number }).port;
const N = 300;
const clientOpts = { port, host: '127.0.0.1', servername: 'localhost', ca: ca.certPem, cert: agent.certPem, key: agent.keyPem };
let session: Buffer | undefined;
if (RESUMED) {
  await new Promise<void>((r) => { const c = connect(clientOpts); c.once('session', (s: Buffer) => { session = s; r(); }); });
  socks.length = 0;
}
for (let i = 0; i < N; i++) await new Promise<void>((r) => { const c = connect({ ...clientOpts, ...(session ? { session } : {}) }); c.on('secureConnect', () => r()); });
while (socks.length < N) await new Promise((r) => setTimeout(r, 10));
if (RESUMED && !socks.every((s) => s.isSessionReused())) throw new Error('not every connection resumed');
const ra = new A.R(new A.T(ca.certPem)), rb = new B.R(new B.T(ca.certPem));
// Warm both (first resolve verifies the chain; later ones are the returning agent).
ra.resolve(socks[0]); rb.resolve(socks[1]);
const res: Record<string, number[]> = { a: [], b: [] };
for (let round = 0; round < 6; round++) {
  for (const [k, r, from] of [['a', ra, 0], ['b', rb, 1]] as const) {
    const t0 = process.cpuUsage();
    let n = 0;
    for (let i = 2 + from + round * 0; i < N; i += 2) { r.resolve(socks[i]); n++; }
    const d = process.cpuUsage(t0);
    res[k]!.push((d.user + d.system) / n);
    // fresh verdicts next round: new resolvers share nothing with the socket WeakMaps
  }
  ra.verdicts = new WeakMap(); rb.verdicts = new WeakMap();
}
const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
console.log(`per new connection of a returning agent, CPU µs (median of 6): ${dirA}: ${med(res.a!).toFixed(1)}  ${dirB}: ${med(res.b!).toFixed(1)}  (rounds a ${res.a!.map((x) => x.toFixed(0)).join(',')} b ${res.b!.map((x) => x.toFixed(0)).join(',')})`);
process.exit(0);
