#!/usr/bin/env node
/**
 * The `agent-gate` command line (the package's bin). The command tree is in program.ts.
 * @module
 */
import { buildProgram } from './program.js';

buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    process.stderr.write(`agent-gate: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(1);
  });
