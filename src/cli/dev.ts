import { relative, resolve } from 'node:path';
import { ensureDevPki } from '../pki/index.js';
import { startDemoUpstream } from './demo-upstream.js';
import { configOrExit, runGate } from './gate.js';

/**
 * `agent-gate dev` (what `npm start` runs): dev profile on loopback, memory store, dev PKI
 * under pki/dev (generated when missing), a demo upstream, and the one command that completes
 * the whole flow. Any GATE_* variable still overrides these defaults.
 */
export async function runDev(opts: { pkiDir: string }): Promise<void> {
  const pkiDir = resolve(opts.pkiDir);
  const pki = await ensureDevPki(pkiDir);
  const upstream = process.env.GATE_UPSTREAM_URL ? undefined : await startDemoUpstream();
  const env: Record<string, string | undefined> = {
    GATE_ENV: 'dev',
    GATE_LISTEN: '127.0.0.1:8443',
    GATE_ADMIN_LISTEN: '127.0.0.1:9464',
    GATE_STORE: 'memory',
    GATE_TLS_CERT: pki.serverCert,
    GATE_TLS_KEY: pki.serverKey,
    GATE_CLIENT_CA: pki.caCert,
    GATE_UPSTREAM_URL: upstream?.url,
    GATE_LOG_LEVEL: 'warn',
    ...process.env,
  };
  const config = configOrExit(env);
  await runGate(config, ({ publicPort, adminPort }) => {
    const rel = (p: string) => relative(process.cwd(), p) || p;
    const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
    const lines = [
      '',
      `agent-gate dev is running: gate https://${host}:${publicPort}${config.pathPrefix}, admin http://${config.adminListen.host}:${adminPort}/metrics`,
      upstream ? `demo upstream ${upstream.url} (echoes the identity headers the gate adds)` : `upstream ${config.upstream.url}`,
      '',
      'Complete the whole flow (challenge -> signed proof -> token -> gated call) with the dev agent certificate:',
      '',
      `  node dist/cli/main.js agent call --cert ${rel(pki.agentCert)} --key ${rel(pki.agentKey)} --ca ${rel(pki.caCert)} https://${host}:${publicPort}/hello`,
      '',
      'Stop with Ctrl-C.',
      '',
    ];
    process.stdout.write(lines.join('\n'));
  });
}
