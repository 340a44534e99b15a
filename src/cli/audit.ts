/**
 * `agent-gate audit verify <file>` and `agent-gate audit keygen`: checking an audit trail and
 * making its key. The key comes from `GATE_AUDIT_KEY_FILE`, the variable the gate writes with
 * (PROTOCOL.md section 12). Exit status of `verify`: 0 intact, 1 broken, 2 usage, key or read error.
 * @module
 */
import { writeFile } from 'node:fs/promises';
import { Command, type ErrorOptions } from 'commander';
import { AuditSetupError, generateAuditKey, loadAuditKey, verifyAudit, type AuditReport } from '../audit/index.js';
import { writeOut, writeErr, oneLine } from './output.js';

const EXIT_BROKEN = 1;
// As for `config check` and `pki`: refused input and failed operations.
const EXIT_ERROR = 2;

/** A command whose usage errors (commander's own included) exit with status 2. */
class AuditCommand extends Command {
  override createCommand(name?: string): Command {
    return new AuditCommand(name);
  }

  override error(message: string, errorOptions?: ErrorOptions): never {
    return super.error(message, { exitCode: EXIT_ERROR, ...errorOptions });
  }
}

/** A non-zero outcome that is a result, not a failure: its own exit status and stderr line. */
interface Outcome {
  exitCode: number;
  line: string;
}

/** Runs `fn`, turning any failure into one `error: ...` line on stderr and exit status 2. */
function guarded<A extends unknown[]>(fn: (...args: A) => Promise<Outcome | void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const cmd = args[args.length - 1] as Command;
    let outcome: Outcome | void = undefined;
    try {
      outcome = await fn(...args);
    } catch (err) {
      // commander's error() honours the program's exitOverride, so callers can test this path.
      cmd.error(`error: ${oneLine(err)}`, { exitCode: EXIT_ERROR, code: 'agent-gate.audit.failed' });
    }
    if (outcome) cmd.error(outcome.line, { exitCode: outcome.exitCode, code: 'agent-gate.audit.broken' });
  };
}

const iso = (ts: number): string => new Date(ts).toISOString();

/** The human report of `audit verify`, one fact a line. */
export function formatAuditReport(file: string, r: AuditReport): string {
  const out = [`audit trail: ${file}`, `checkpoint file: ${r.checkpointFile ?? 'none found (truncation cannot be detected)'}`];
  out.push(`lines: ${r.lines}, event records verified: ${r.records}`);
  if (r.checkpoint) out.push(`last checkpoint: record ${r.checkpoint.seq}, ${r.checkpoint.count} event records before it, ${iso(r.checkpoint.ts)}`);
  if (r.firstBroken) out.push(`first broken link: line ${r.firstBroken.line}: ${r.firstBroken.reason}`);
  if (r.truncated && r.checkpoint) out.push(`truncated: the checkpoint file confirms records up to ${r.checkpoint.seq}, the trail has ${r.lines} lines`);
  if (r.checkpointProblem) out.push(`checkpoint problem: ${r.checkpointProblem}`);
  if (r.unconfirmed > 0 && r.unconfirmedSeqs) {
    const { first, last } = r.unconfirmedSeqs;
    out.push(`unconfirmed: ${r.unconfirmed} event records after the last checkpoint (records ${first}-${last}); records cut after them would not show`);
  } else {
    out.push('unconfirmed: 0 event records after the last checkpoint');
  }
  out.push(`result: ${r.ok ? 'intact' : 'BROKEN'}`);
  return out.join('\n') + '\n';
}

function summary(r: AuditReport): string {
  if (r.firstBroken) return `first broken link at line ${r.firstBroken.line}: ${r.firstBroken.reason}`;
  if (r.truncated) return `truncated below the last checkpoint (record ${r.checkpoint?.seq ?? '?'})`;
  return `checkpoint problem: ${r.checkpointProblem ?? 'unknown'}`;
}

/** Adds the `audit` command group (`verify`, `keygen`) to `program`. */
export function registerAuditCommands(program: Command): void {
  const audit = new AuditCommand('audit')
    .copyInheritedSettings(program)
    // A verification result or a key error is one stderr line, not a usage error with the help after it.
    .showHelpAfterError(false)
    .description('audit trail tools (GATE_AUDIT_FILE, GATE_AUDIT_KEY_FILE)');
  program.addCommand(audit);

  audit
    .command('verify')
    .description('verify an audit trail with the key named by GATE_AUDIT_KEY_FILE; exit 0 intact, 1 broken, 2 usage or key error')
    .argument('<file>', 'the audit trail (GATE_AUDIT_FILE)')
    .option('--checkpoint <file>', 'checkpoint file (default: <file>.checkpoint, if present)')
    .action(
      guarded(async (file: string, opts: { checkpoint?: string }, cmd: Command) => {
        const keyFile = process.env.GATE_AUDIT_KEY_FILE;
        if (!keyFile) throw new AuditSetupError('GATE_AUDIT_KEY_FILE', 'not set: it must name the key file the trail was written with');
        const key = loadAuditKey(keyFile);
        const report = await verifyAudit(file, key, opts.checkpoint === undefined ? {} : { checkpointFile: opts.checkpoint });
        writeOut(cmd, formatAuditReport(file, report));
        if (!report.ok) return { exitCode: EXIT_BROKEN, line: `audit verify: ${file}: ${summary(report)}` };
      }),
    );

  audit
    .command('keygen')
    .description('generate an audit HMAC key (base64 of 32 random bytes)')
    .option('--out <file>', 'write to this file with mode 0600 (never overwrites) instead of stdout')
    .action(
      guarded(async (opts: { out?: string }, cmd: Command) => {
        const key = generateAuditKey();
        if (!opts.out) return writeOut(cmd, key + '\n');
        try {
          await writeFile(opts.out, key + '\n', { mode: 0o600, flag: 'wx' });
        } catch (err) {
          // Replacing a key makes every trail written with it unverifiable.
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${opts.out} exists; refusing to overwrite an audit key`);
          throw err;
        }
        writeErr(cmd, `wrote ${opts.out}; use GATE_AUDIT_KEY_FILE=${opts.out}\n`);
      }),
    );
}
