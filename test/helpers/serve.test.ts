/**
 * The process helpers themselves: a gate that exits while starting is reported at once, with
 * its own words, not after the 30 s readiness timeout.
 */
import { expect, it } from 'vitest';
import { GiveUp, waitFor } from './ports.js';
import { spawnServe } from './serve.js';

it('spawnServe: a gate that refuses its configuration fails the start at once, with its message', async () => {
  const started = Date.now();
  // GATE_ENV=prod with nothing else set: the gate lists its config violations and exits 2.
  const err = await spawnServe({ GATE_ENV: 'prod' }).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err?.message).toMatch(/exited with 2 while waiting for gate process ready/);
  expect(err?.message).toMatch(/config violation/);
  expect(Date.now() - started).toBeLessThan(15_000);
});

it('waitFor: any other error is "not yet", GiveUp stops the wait', async () => {
  let calls = 0;
  await waitFor(
    () => {
      calls++;
      if (calls < 3) throw new Error('not ready');
      return true;
    },
    5000,
    'third call',
    1,
  );
  expect(calls).toBe(3);
  await expect(
    waitFor(
      () => {
        throw new GiveUp('gone');
      },
      60_000,
      'nothing',
    ),
  ).rejects.toThrow('gone while waiting for nothing');
});
