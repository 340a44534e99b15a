/**
 * The shared parts of a file of gate tests: the fixture PKI, a recording upstream, optionally
 * an `openssl ocsp` responder that knows every fixture agent, and closers run (last first)
 * after the file, all of them even when one throws; then the fixture directory goes. Each
 * test starts the gates it needs (test/helpers/gate.ts startGate).
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { makeFixtures, type Fixtures } from './fixtures.js';
import { startOpensslOcsp, type OpensslOcsp } from './openssl-ocsp.js';
import { startUpstream, type RecordingUpstream } from './upstream.js';

/** What {@link gateSuite} provides once the file's beforeAll has run. */
export interface GateSuite {
  readonly fx: Fixtures;
  readonly up: RecordingUpstream;
  /** With `ocsp: true`: the responder, every fixture agent recorded good. */
  readonly ocsp: OpensslOcsp;
  /** Run after the file, last first (gates, agents, clients the tests opened). */
  readonly closers: (() => Promise<void>)[];
}

/** Registers the file's beforeAll/afterAll for the shared parts and returns them. */
export function gateSuite(opts: { ocsp?: boolean } = {}): GateSuite {
  let fx: Fixtures | undefined;
  let up: RecordingUpstream | undefined;
  let ocsp: OpensslOcsp | undefined;
  const closers: (() => Promise<void>)[] = [];
  beforeAll(async () => {
    fx = await makeFixtures();
    up = await startUpstream();
    if (opts.ocsp) {
      ocsp = await startOpensslOcsp(fx.ca);
      for (const a of Object.values(fx.agents)) ocsp.add(a);
    }
  });
  afterAll(async () => {
    const fixtureDir = fx?.dir;
    await closeAll([
      ...closers.splice(0).reverse(),
      async () => ocsp?.close(),
      async () => up?.close(),
      // Last: the gates above read their certificates from it.
      () => (fixtureDir ? rmSync(fixtureDir, { recursive: true, force: true }) : undefined),
    ]);
  });
  return {
    get fx() {
      return fx!;
    },
    get up() {
      return up!;
    },
    get ocsp() {
      if (!ocsp) throw new Error('gateSuite({ ocsp: true }) starts the OCSP responder');
      return ocsp;
    },
    closers,
  };
}

/**
 * Runs every closer in order, even after one throws (with `isolate: false` whatever a failed
 * close skipped would stay alive for the worker's later files), then rethrows the first error.
 */
export async function closeAll(closers: Iterable<() => Promise<unknown> | unknown>): Promise<void> {
  const errors: unknown[] = [];
  for (const c of closers) {
    try {
      await c();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw errors[0];
}
