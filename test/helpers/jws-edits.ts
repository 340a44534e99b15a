/**
 * Character edits of compact JWS strings for the fuzz suites, and the judge of which edits
 * leave a token the same to a decoder.
 * @module
 */
import fc from 'fast-check';

/** One edit: replace, insert or delete a character at a relative position. */
export interface CharEdit {
  at: number;
  op: string;
  ch: string;
}

/** Edits whose inserted or replacing character comes from `chars` or is any single one. */
export function charEdits(chars: string[]): fc.Arbitrary<CharEdit> {
  return fc.record({
    at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
    op: fc.constantFrom('replace', 'insert', 'delete'),
    ch: fc.oneof(fc.constantFrom(...chars), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })),
  });
}

/** `s` with `edits` applied in order. */
export function applyCharEdits(s: string, edits: CharEdit[]): string {
  let out = s;
  for (const e of edits) {
    const i = Math.floor(e.at * out.length);
    if (e.op === 'replace') out = out.slice(0, i) + e.ch + out.slice(i + 1);
    else if (e.op === 'insert') out = out.slice(0, i) + e.ch + out.slice(i);
    else out = out.slice(0, i) + out.slice(i + 1);
  }
  return out;
}

/** Whether two compact JWS strings decode (the way jose decodes) to the same three byte strings. */
export function decodeEquivalent(a: string, b: string): boolean {
  const sa = a.split('.');
  const sb = b.split('.');
  if (sa.length !== 3 || sb.length !== 3) return false;
  const dec = (s: string) => {
    if (/[+/]/.test(s)) throw new Error('not base64url');
    return Buffer.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), 'latin1');
  };
  try {
    return sa.every((s, i) => dec(s).equals(dec(sb[i]!)));
  } catch {
    return false;
  }
}
