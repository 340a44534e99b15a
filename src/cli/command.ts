/**
 * Pieces the stand-alone subcommands share (`demo-upstream`, `nginx-config`, `pki`).
 * @module
 */
import { Command, type ErrorOptions } from 'commander';
import { oneLine } from './output.js';

/** Exit status of a {@link OneLineCommand}'s errors. */
export const EXIT_ERROR = 2;

/** A command whose every error, commander's usage errors included, is one line and exit 2. */
export class OneLineCommand extends Command {
  override createCommand(name?: string): Command {
    return new OneLineCommand(name);
  }

  override error(message: string, errorOptions?: ErrorOptions): never {
    return super.error(oneLine(message), { ...errorOptions, exitCode: EXIT_ERROR });
  }
}

/** Resolves on the first SIGTERM or SIGINT, then stops listening for them. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve(signal);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
