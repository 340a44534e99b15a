/**
 * RandomPool's bookkeeping with a CSPRNG stand-in that writes a running counter, so every byte
 * says where it came from: draws are back to back, never overlap, never span a refill, and a
 * refill comes exactly when what is left is too short. (test/lib/random.test.ts uses the real
 * CSPRNG.)
 */
import { describe, expect, it } from 'vitest';
import { RandomPool } from '../../src/lib/random.js';

const bytes = (s: string) => [...Buffer.from(s, 'base64url')];
const from = (start: number, n: number) => Array.from({ length: n }, (_, i) => (start + i) % 256);

describe('RandomPool layout', () => {
  it('hands out consecutive bytes, each once, and refills only when the rest is too short', () => {
    let next = 0;
    const fills: number[] = [];
    const pool = new RandomPool(40, (buf) => {
      fills.push(next);
      for (let i = 0; i < buf.length; i++) buf[i] = next++ % 256;
    });
    expect(fills).toEqual([]);
    expect(bytes(pool.base64url(16))).toEqual(from(0, 16)); // the first draw fills
    expect(bytes(pool.base64url(16))).toEqual(from(16, 16));
    expect(fills).toEqual([0]);
    // 8 bytes left: a 16-byte draw refills and starts at the new pool's first byte.
    expect(bytes(pool.base64url(16))).toEqual(from(40, 16));
    expect(fills).toEqual([0, 40]);
    // 24 left: an exact fit takes them all without a refill.
    expect(bytes(pool.base64url(24))).toEqual(from(56, 24));
    expect(fills).toEqual([0, 40]);
    expect(bytes(pool.base64url(1))).toEqual([80]);
    expect(fills).toEqual([0, 40, 80]);
  });
});
