#!/usr/bin/env node
/**
 * The `agent-gate` command line.
 * @module
 */
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { generateSigningJwk } from '../tokens/index.js';
import { registerAgentCommands } from './agent.js';
import { registerAdminCommands } from './admin.js';
import { registerAuditCommands } from './audit.js';
import { registerNginxCommands } from './nginx.js';
import { registerDemoCommands } from './demo.js';
import { runDev } from './dev.js';
import { configCheck, configOrExit, runGate } from './gate.js';
import { registerPkiCommands } from './pki.js';

const program = new Command('agent-gate').description('mTLS challenge/token access gate for software agents').showHelpAfterError();

program
  .command('serve')
  .description('run the gate from GATE_* environment variables alone')
  .action(async () => {
    const config = configOrExit(process.env);
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

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`agent-gate: ${(err as Error)?.message ?? String(err)}\n`);
  process.exit(1);
});
