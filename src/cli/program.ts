/**
 * The `agent-gate` command tree, built without parsing anything, so that the bin
 * (src/cli/main.ts), the tests and the CLI reference generator (scripts/gen-reference.ts) all
 * see the same commands, options and examples.
 * @module
 */
import cluster from 'node:cluster';
import { readFileSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { generateSigningJwk } from '../tokens/index.js';
import { registerAgentCommands } from './agent.js';
import { registerAdminCommands } from './admin.js';
import { registerAuditCommands } from './audit.js';
import { registerNginxCommands } from './nginx.js';
import { registerDemoCommands } from './demo.js';
import { runDev } from './dev.js';
import { configCheck, configOrExit, opensslConfWarning, runGate } from './gate.js';
import { registerPkiCommands } from './pki.js';
import { OneLineCommand } from './command.js';

/** The package version, read from package.json (two levels up from both src/cli and dist/cli). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

/**
 * One example per command, keyed by the command path without `agent-gate`. Shown after each
 * command's `--help` and in docs/reference/cli.md; a command without one fails test/cli/help.test.ts.
 */
export const COMMAND_EXAMPLES: Readonly<Record<string, string>> = {
  serve: 'GATE_UPSTREAM_URL=https://api.internal GATE_CLIENT_CA=ca.pem GATE_TLS_CERT=server.crt GATE_TLS_KEY=server.key \\\n    GATE_REDIS_URL=redis://127.0.0.1:6379 GATE_SIGNING_KEY_FILE=signing.jwk agent-gate serve',
  dev: 'GATE_LISTEN=127.0.0.1:18443 GATE_ADMIN_LISTEN=127.0.0.1:19464 agent-gate dev --pki-dir pki/dev',
  config: 'GATE_ENV=prod agent-gate config check',
  'config check': 'GATE_ENV=staging GATE_UPSTREAM_URL=https://api.internal agent-gate config check',
  keygen: 'agent-gate keygen --out signing.jwk && GATE_SIGNING_KEY_FILE=signing.jwk agent-gate serve',
  pki: 'agent-gate pki init && agent-gate pki issue alice',
  'pki init': 'agent-gate pki init --dir pki/dev --alg ec-p256 --crl-url http://127.0.0.1:8080/ca.crl',
  'pki issue': 'agent-gate pki issue alice --days 7 --alg ed25519',
  'pki revoke': 'agent-gate pki revoke pki/dev/agents/alice.crt --reason keyCompromise',
  'pki crl': 'agent-gate pki crl --days 7 --out pki/dev/ca.crl',
  'pki ocsp-responder': 'agent-gate pki ocsp-responder --port 8888',
  agent: 'agent-gate agent call --cert pki/dev/agents/demo.crt --key pki/dev/agents/demo.key --ca pki/dev/ca.crt https://127.0.0.1:8443/hello',
  'agent token': 'agent-gate agent token --cert pki/dev/agents/demo.crt --key pki/dev/agents/demo.key --ca pki/dev/ca.crt https://127.0.0.1:8443',
  'agent call':
    "agent-gate agent call --cert pki/dev/agents/demo.crt --key pki/dev/agents/demo.key --ca pki/dev/ca.crt \\\n    -X POST -H 'content-type: application/json' -d '{\"a\":1}' 'https://127.0.0.1:8443/things?q=1'",
  audit: 'GATE_AUDIT_KEY_FILE=audit.key agent-gate audit verify audit.log',
  'audit verify': 'GATE_AUDIT_KEY_FILE=audit.key agent-gate audit verify audit.log --checkpoint audit.log.checkpoint',
  'audit keygen': 'agent-gate audit keygen --out audit.key',
  admin: 'GATE_ADMIN_TOKEN_FILE=admin.token agent-gate admin denylist',
  'admin cooldowns': 'GATE_ADMIN_TOKEN_FILE=admin.token agent-gate admin cooldowns --url http://127.0.0.1:9464',
  'admin cooldown-clear': 'GATE_ADMIN_TOKEN_FILE=admin.token agent-gate admin cooldown-clear AMGmkqh1pR0Jq7fVZ3zq5Q1Yd2o0Z9M8b7n6x5chqVg',
  'admin denylist': 'GATE_ADMIN_TOKEN_FILE=admin.token agent-gate admin denylist',
  'admin deny': 'GATE_ADMIN_TOKEN_FILE=admin.token agent-gate admin deny --agent-id urn:agent:alice --reason "key leaked" --ttl 3600',
  'admin undeny': 'GATE_ADMIN_TOKEN_FILE=admin.token agent-gate admin undeny 3f2a9c01d4e5b6a7',
  'admin refusal': 'GATE_ADMIN_TOKEN_FILE=admin.token agent-gate admin refusal urn:agent-gate:refusal:00mwtdookda25f9ae94e76b65a',
  'nginx-config':
    'agent-gate nginx-config --listen 0.0.0.0:443 --gate-url https://gate.internal:8443 --gate-ca ca.pem \\\n    --tls-cert edge.crt --tls-key edge.key --client-ca agents-ca.pem --hmac-key-file k1.key --kid k1 --dir /etc/agent-gate-nginx',
  'demo-upstream': 'agent-gate demo-upstream --listen 127.0.0.1:8080',
};

/** Every command below `cmd` (depth first, in definition order) with its path without the root name. */
export function walkCommands(cmd: Command, prefix: string[] = []): { path: string; command: Command }[] {
  return cmd.commands.flatMap((c) => {
    const path = [...prefix, c.name()];
    return [{ path: path.join(' '), command: c }, ...walkCommands(c, path)];
  });
}

/** Builds the whole `agent-gate` program: commands, `--version`, and an example after each command's help. */
export function buildProgram(): Command {
  // Every failure is one line on stderr and exit 2 (docs/reference/cli.md), usage errors of every
  // command included: subcommands made with .command() are OneLineCommands too. `--help` shows
  // the usage.
  const program = new OneLineCommand('agent-gate')
    .description('mTLS challenge/token access gate for software agents')
    .version(packageVersion(), '-V, --version', 'print the agent-gate version');

  program
    .command('serve')
    .description('run the gate from GATE_* environment variables alone')
    .action(async () => {
      const config = configOrExit(process.env);
      // Once per gate: workers run this action too.
      const warning = cluster.isPrimary ? opensslConfWarning(process.env) : undefined;
      if (warning) process.stderr.write(warning + '\n');
      await runGate(config);
    });

  program
    .command('dev')
    .description('run the embedded dev default: memory store, dev PKI, demo upstream (what `npm start` runs)')
    .option('--pki-dir <dir>', 'where the dev PKI lives', 'pki/dev')
    .action(async (opts: { pkiDir: string }) => runDev(opts));

  program
    .command('config')
    .description('configuration tools')
    .command('check')
    .description('print the effective configuration (secrets masked); exit 2 on any violation')
    .action(async () => {
      process.exitCode = await configCheck(process.env);
    });

  program
    .command('keygen')
    .description('generate an Ed25519 token-signing key as a private JWK (kid = JWK thumbprint)')
    .option('--out <file>', 'write to this file with mode 0600 instead of stdout')
    .action(async (opts: { out?: string }) => {
      const jwk = JSON.stringify(await generateSigningJwk());
      if (opts.out) {
        writeFileSync(opts.out, jwk + '\n', { mode: 0o600, flag: 'wx' });
        process.stderr.write(`wrote ${opts.out}; use GATE_SIGNING_KEY_FILE=${opts.out}\n`);
      } else {
        process.stdout.write(jwk + '\n');
      }
    });

  registerPkiCommands(program);
  registerAgentCommands(program);
  registerAuditCommands(program);
  registerAdminCommands(program);
  registerNginxCommands(program);
  registerDemoCommands(program);

  for (const { path, command } of walkCommands(program)) {
    const example = COMMAND_EXAMPLES[path];
    if (example !== undefined) command.addHelpText('after', `\nExample:\n  $ ${example}\n`);
  }
  return program;
}
