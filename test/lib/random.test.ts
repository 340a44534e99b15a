import { describe, expect, it } from 'vitest';
import { RandomPool } from '../../src/lib/random.js';

describe('RandomPool', () => {
  it('hands out each byte once: draws across several refills never repeat', () => {
    const pool = new RandomPool(64);
    const seen = new Set<string>();
    // 16-byte draws from a 64-byte pool: four per fill, 250 refills.
    for (let i = 0; i < 1000; i++) seen.add(pool.base64url(16));
    expect(seen.size).toBe(1000);
  });

  it('encodes n bytes as unpadded base64url, refilling when a draw does not fit what is left', () => {
    const pool = new RandomPool(40);
    const a = pool.base64url(32);
    const b = pool.base64url(16); // 8 bytes left: a refill, not a short or wrapped draw
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(b).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(Buffer.from(a, 'base64url')).toHaveLength(32);
    expect(Buffer.from(b, 'base64url')).toHaveLength(16);
  });

  it('looks uniform: byte frequencies over 256 KiB pass a chi-square test', () => {
    const pool = new RandomPool();
    const counts = new Array<number>(256).fill(0);
    for (let i = 0; i < 8192; i++) for (const byte of Buffer.from(pool.base64url(32), 'base64url')) counts[byte]!++;
    const expected = (8192 * 32) / 256;
    const chi2 = counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
    // 255 degrees of freedom: p = 1e-6 at ~375. A stuck or zero pool gives ~67 million.
    expect(chi2).toBeLessThan(375);
  });

  it('refuses a draw larger than the pool or not a positive integer', () => {
    const pool = new RandomPool(16);
    expect(() => pool.base64url(17)).toThrow(RangeError);
    expect(() => pool.base64url(0)).toThrow(RangeError);
    expect(() => pool.base64url(1.5)).toThrow(RangeError);
  });
});
