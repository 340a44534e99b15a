/** Canonical form of a certificate serial number: upper-case hex without leading zeros. */
export function normalizeSerial(hex: string): string {
  const s = hex.replace(/[^0-9a-fA-F]/g, '').toUpperCase().replace(/^0+/, '');
  return s === '' ? '0' : s;
}
