/**
 * A minimal DER reader: tag, length and value boundaries over a Buffer, without building a
 * tree. Used where general ASN.1 libraries are too slow or capped (a CRL with a million
 * entries is 30+ MB and millions of nodes). Pure: no I/O.
 * @module
 */

/** One TLV: `start` of the tag, `valueStart`/`end` of its contents. */
export interface Tlv {
  tag: number;
  start: number;
  valueStart: number;
  end: number;
}

/** Reads the TLV at `pos`; throws RangeError on malformed or out-of-bounds encodings. */
export function readTlv(buf: Buffer, pos: number, limit: number = buf.length): Tlv {
  if (pos + 2 > limit) throw new RangeError('DER: truncated header');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new RangeError('DER: multi-byte tags not supported');
  let len = buf[pos + 1]!;
  let valueStart = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new RangeError('DER: unsupported length');
    if (valueStart + n > limit) throw new RangeError('DER: truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[valueStart + i]!;
    valueStart += n;
  }
  const end = valueStart + len;
  if (end > limit) throw new RangeError('DER: value exceeds its container');
  return { tag, start: pos, valueStart, end };
}

/** The children of a constructed TLV, in order. */
export function* children(buf: Buffer, parent: Tlv): Generator<Tlv> {
  let pos = parent.valueStart;
  while (pos < parent.end) {
    const t = readTlv(buf, pos, parent.end);
    yield t;
    pos = t.end;
  }
}

/** Decodes an OBJECT IDENTIFIER value. */
export function oidOf(buf: Buffer, t: Tlv): string {
  if (t.tag !== 0x06) throw new RangeError('DER: not an OID');
  const parts: number[] = [];
  let v = 0;
  for (let i = t.valueStart; i < t.end; i++) {
    const b = buf[i]!;
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      if (parts.length === 0) parts.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else parts.push(v);
      v = 0;
    }
  }
  return parts.join('.');
}

/** Decodes UTCTime (0x17) or GeneralizedTime (0x18) to Unix ms. */
export function timeOf(buf: Buffer, t: Tlv): number {
  const s = buf.toString('latin1', t.valueStart, t.end);
  let m: RegExpExecArray | null;
  if (t.tag === 0x17 && (m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s))) {
    const yy = Number(m[1]);
    return Date.UTC(yy < 50 ? 2000 + yy : 1900 + yy, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  }
  if (t.tag === 0x18 && (m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s))) {
    return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  }
  throw new RangeError('DER: not a UTCTime/GeneralizedTime in Z form');
}

/** An INTEGER's magnitude as upper-case hex without leading zeros (serial numbers). */
export function integerHex(buf: Buffer, t: Tlv): string {
  if (t.tag !== 0x02) throw new RangeError('DER: not an INTEGER');
  const s = buf.toString('hex', t.valueStart, t.end).toUpperCase().replace(/^0+/, '');
  return s === '' ? '0' : s;
}

/** The raw bytes of a TLV (tag, length and value). */
export function rawOf(buf: Buffer, t: Tlv): Buffer {
  return buf.subarray(t.start, t.end);
}

/** The subject Name of a certificate, as raw DER (for exact issuer-name comparisons). */
export function certificateSubject(der: Buffer): Buffer {
  const cert = readTlv(der, 0);
  const tbs = readTlv(der, cert.valueStart, cert.end);
  const fields = [...children(der, tbs)];
  // [0] EXPLICIT version is optional; subject is the 6th field with it, 5th without.
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0;
  const subject = fields[offset + 4];
  if (!subject || subject.tag !== 0x30) throw new RangeError('DER: no subject');
  return rawOf(der, subject);
}
