/**
 * Client addresses as the per-address bounds count them.
 * @module
 */
import { isIPv4, isIPv6 } from 'node:net';

/**
 * The per-address key: an IPv4 address (IPv4-mapped IPv6 included) as is, an IPv6 address as
 * its /64, since one host can use every address of its /64.
 */
export function addressKey(address: string | undefined): string {
  if (!address) return '?';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (isIPv4(address) || !isIPv6(address)) return address;
  const bare = address.replace(/%.*$/, '').toLowerCase();
  const [head = '', tail] = bare.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  // An embedded IPv4 tail is in the low 64 bits: only its presence (two groups) matters here.
  const right = tail ? tail.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => Number.parseInt(g || '0', 16).toString(16)).join(':')}::/64`;
}
