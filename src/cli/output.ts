import type { Command } from 'commander';

/** Writes to stdout through commander's output configuration, so a program (or a test) that redirects it gets ours too. */
export function writeOut(cmd: Command, text: string): void {
  const write = cmd.configureOutput().writeOut ?? ((s: string) => process.stdout.write(s));
  write(text);
}

/** Writes to stderr through commander's output configuration. */
export function writeErr(cmd: Command, text: string): void {
  const write = cmd.configureOutput().writeErr ?? ((s: string) => process.stderr.write(s));
  write(text);
}

/** An error's message folded onto one line, for `error: ...` lines. */
export function oneLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\s*\n\s*/g, ' ').trim();
}
