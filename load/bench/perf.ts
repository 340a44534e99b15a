/**
 * Whole-process CPU profiles with Linux `perf` (cpu-clock sampling, every thread): unlike
 * V8's `--cpu-prof`, this sees OpenSSL, the kernel (syscalls, loopback TCP), libc and V8's own
 * runtime and GC. The gate runs with `--perf-basic-prof-only-functions` so JIT-compiled JS
 * frames get names. Summaries: self time by category, by shared object and by symbol.
 * @module
 */
import { spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import type { ProfileRow } from './profile.js';

/** True when a working `perf` is on PATH. */
export function perfAvailable(): boolean {
  const r = spawnSync('perf', ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}

/** `perf record` of `pid` for `seconds` into `out`; resolves when perf has written the file. */
export function perfRecord(pid: number, seconds: number, out: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('perf', ['record', '-e', 'cpu-clock', '-F', '999', '-g', '-p', String(pid), '-o', out, '--', 'sleep', String(seconds)], { stdio: 'ignore' });
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`perf record exited with ${code}`))));
  });
}

/** What {@link perfSummary} returns. */
export interface PerfSummary {
  samples: number;
  categories: ProfileRow[];
  byDso: ProfileRow[];
  topSymbols: ProfileRow[];
}

const OPENSSL = /^(_?_?ecp_|ecp_|EC_|ec_|ossl_|OPENSSL_|OSSL_|CRYPTO_|SSL_|ssl|tls_|dtls|EVP_|evp_|BN_|bn_|aes|AES|gcm|GCM|sha|SHA|x25519|X25519|fe_|fe51|ChaCha|chacha|Poly1305|poly1305|RSA_|rsa_|ASN1_|asn1_|X509|x509|d2i_|i2d_|PEM_|OBJ_|ERR_|BIO_|bio_|do_ssl3|ssl3|EC_POINT|ecdsa|ECDSA|ecdh|ECDH|HMAC|hmac|KDF|kdf|HKDF|tls13|do_name|DECODER|decoder|OSSL_DECODER|md_|MD_|RAND_|rand_|drbg|DRBG|ctr_|SipHash|CMAC|sk_|OPENSSL_sk)/;

function jsPackage(sym: string): string {
  // "JS:*forward file:///work/main/dist/proxy/forward.js:93:18", "JS:~emit node:events:471:43"
  const m = /\s(\S+):\d+:\d+$/.exec(sym);
  const url = m?.[1] ?? '';
  if (!url) return /wasm/.test(sym) ? 'JS: wasm (undici llhttp)' : 'JS: other';
  if (url.startsWith('node:')) return `JS: ${url.replace(/^node:internal\/(deps\/)?/, 'node:').split('/')[0]}`;
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = url.slice(nm + '/node_modules/'.length).split('/');
    return `JS: ${parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1] ?? ''}` : (parts[0] ?? url)}`;
  }
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return 'JS: agent-gate dist/';
  return 'JS: other';
}

/** The category of a sample's leaf symbol. */
export function categorize(dso: string, sym: string): string {
  if (dso.includes('kernel')) return 'kernel (syscalls, loopback TCP, scheduler)';
  if (sym.startsWith('JS:') || dso.startsWith('[JIT]') || dso.startsWith('perf-')) return jsPackage(sym);
  if (dso.startsWith('libc')) return /malloc|free|alloc|chunk|consolidate|tcache/.test(sym) ? 'libc malloc/free' : 'libc other (memcpy, locks, ...)';
  if (dso.startsWith('libstdc++')) return 'libstdc++';
  if (dso === 'node' || dso.endsWith('/node')) {
    if (OPENSSL.test(sym)) return 'OpenSSL (handshakes, records, certificates)';
    if (/^llhttp/.test(sym)) return 'llhttp (HTTP parser)';
    if (/^uv_|^uv__/.test(sym)) return 'libuv';
    if (/Scavenge|MarkCompact|Sweeper|Heap::|GarbageCollect|Marking|Evacuat|ConcurrentMark|MinorMC|GCTracer|CollectGarbage|RecordWrite/.test(sym)) return 'V8 GC (incl. write barriers)';
    if (/compiler::|Compile|Parser|Maglev|Turbofan|turboshaft|Baseline|Interpreter|Bytecode/.test(sym)) return 'V8 compiler / interpreter';
    if (/^Builtins_/.test(sym)) return 'V8 builtins (property ICs, calls, promises, strings)';
    if (/^v8::|^V8_|^Runtime_/.test(sym)) return 'V8 runtime (C++)';
    if (/^node::/.test(sym)) return 'node C++ (bindings, stream and TLS wrappers)';
    return 'node binary, other';
  }
  return `other (${dso})`;
}

/** Parses `perf report` (self time per dso+symbol) into summaries; `top` rows. */
export function perfSummary(file: string, top = 25): PerfSummary {
  const r = spawnSync('perf', ['report', '-i', file, '--stdio', '--no-children', '--sort', 'dso,sym', '-g', 'none', '--percent-limit', '0'], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`perf report failed: ${r.stderr}`);
  const samples = Number(/^# Samples: (\d+)([KM]?)/m.exec(r.stdout)?.[1] ?? 0) * ({ K: 1e3, M: 1e6 }[/^# Samples: \d+([KM]?)/m.exec(r.stdout)?.[1] ?? ''] ?? 1);
  const cats = new Map<string, number>();
  const dsos = new Map<string, number>();
  const syms: ProfileRow[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([\d.]+)%\s+(.+?)\s+\[([.kgu])\]\s+(.+?)\s*$/.exec(line);
    if (!m) continue;
    const pct = Number(m[1]);
    const dso = (m[2] ?? '').trim();
    const sym = m[4] ?? '';
    const cat = categorize(dso, sym);
    cats.set(cat, (cats.get(cat) ?? 0) + pct);
    const dsoKey = dso.startsWith('[JIT]') ? '[JIT] (JS compiled by V8)' : dso;
    dsos.set(dsoKey, (dsos.get(dsoKey) ?? 0) + pct);
    syms.push({ name: `${sym} (${dsoKey})`, ms: 0, pct });
  }
  const rows = (m: Map<string, number>): ProfileRow[] =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).map(([name, pct]) => ({ name, ms: 0, pct: Math.round(pct * 10) / 10 }));
  return {
    samples,
    categories: rows(cats),
    byDso: rows(dsos),
    topSymbols: syms.sort((a, b) => b.pct - a.pct).slice(0, top),
  };
}

/** Removes the JIT symbol map node wrote for `pid` (`/tmp/perf-<pid>.map`). */
export function removePerfMap(pid: number): void {
  rmSync(`/tmp/perf-${pid}.map`, { force: true });
}
