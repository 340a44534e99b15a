/**
 * Reads a V8 `.cpuprofile` (from `node --cpu-prof`) and summarises where the time went:
 * self time per function (name + file:line), self time per package or module, inclusive
 * time of a few interesting frames, folded stacks (Brendan Gregg's format, for speedscope
 * or flamegraph.pl) and a small self-contained SVG flame graph.
 *
 * Sample durations follow Chrome DevTools: sample i lasts until sample i+1
 * (timeDeltas[i+1]); the last one until endTime; each capped at 4 × the median interval, so
 * a gap while the process was descheduled is not charged to whatever ran last. Time spent in C++ (OpenSSL, libuv, the
 * HTTP parser) is attributed to the JS frame that called into it, or to `(program)` when
 * native code runs with no JS on the stack (socket reads/writes and TLS record work
 * driven by libuv).
 * @module
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

/** The subset of the `.cpuprofile` JSON used here. */
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A row of a summary: time in ms and its share of busy (non-idle) time in percent. */
export interface ProfileRow {
  name: string;
  ms: number;
  pct: number;
}

/** What {@link analyzeProfile} returns. */
export interface ProfileSummary {
  /** Wall time covered by the profile (ms). */
  totalMs: number;
  /** `(idle)` time: the event loop waiting. */
  idleMs: number;
  /** Everything else: JS, GC, native work. Percentages below are of this. */
  busyMs: number;
  samples: number;
  topSelf: ProfileRow[];
  byPackage: ProfileRow[];
  inclusive: ProfileRow[];
  /** `frame;frame;frame <µs>` lines, root first. */
  folded: string[];
}

/** `file.js:line` from a URL, shortened to the part after node_modules/ or the project dir. */
export function shortUrl(url: string, line: number): string {
  if (!url) return '';
  let u = url.replace(/^file:\/\//, '');
  const nm = u.lastIndexOf('/node_modules/');
  if (nm >= 0) u = u.slice(nm + '/node_modules/'.length);
  else {
    const dist = u.indexOf('/dist/');
    if (dist >= 0) u = u.slice(dist + 1);
  }
  return `${u}:${line + 1}`;
}

/** The package or module a frame belongs to: `jose`, `fastify`, `node:internal/tls/wrap`, `agent-gate dist/proxy`, ... */
export function packageOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName.startsWith('(')) return functionName;
    return '(native)';
  }
  if (url.startsWith('node:')) return url.replace(/^node:internal\/(deps\/)?/, 'node:');
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = url.slice(nm + '/node_modules/'.length).split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1] ?? ''}` : (parts[0] ?? url);
  }
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return `agent-gate ${url.slice(dist + 1).split('/').slice(0, 2).join('/')}`;
  return url;
}

function frameName(frame: CallFrame): string {
  const fn = frame.functionName || '(anonymous)';
  const where = shortUrl(frame.url, frame.lineNumber);
  return where ? `${fn} ${where}` : fn;
}

/** Frames whose inclusive time is worth reporting: matched against `functionName url`. */
const INCLUSIVE_PATTERNS: Array<[string, RegExp]> = [
  ['jose (any frame)', /\/node_modules\/jose\//],
  ['fastify (any frame)', /\/node_modules\/fastify\//],
  ['pino (any frame)', /\/node_modules\/(pino|pino-std-serializers|sonic-boom|fast-redact)\//],
  ['undici (any frame)', /\/node_modules\/undici\//],
  ['ioredis (any frame)', /\/node_modules\/ioredis\//],
  ['prom-client (any frame)', /\/node_modules\/prom-client\//],
  ['@peculiar/asn1js/pkijs (any frame)', /\/node_modules\/(@peculiar|asn1js|pkijs)\//],
  ['node:_http_server (any frame)', /^node:_http_server|node:_http_common|node:_http_outgoing/],
  ['node tls (any frame)', /^node:(internal\/)?(tls|_tls)/],
  ['node:crypto (any frame)', /^node:internal\/crypto/],
  ['agent-gate dist/identity', /\/dist\/identity\//],
  ['agent-gate dist/tokens', /\/dist\/tokens\//],
  ['agent-gate dist/proxy', /\/dist\/proxy\//],
  ['agent-gate dist/challenge', /\/dist\/challenge\//],
  ['agent-gate dist/metrics', /\/dist\/metrics\//],
  ['agent-gate dist/http', /\/dist\/http\//],
  ['agent-gate dist/ratelimit', /\/dist\/ratelimit\//],
  ['agent-gate dist/store', /\/dist\/store\//],
  ['agent-gate dist/app.js', /\/dist\/app\.js/],
];

/**
 * Summarises a profile; `top` rows in each table. With `windowUs` ([start, end] on the
 * profile's clock, CLOCK_MONOTONIC µs), only samples inside it count: start-up and shutdown
 * stay out.
 */
export function analyzeProfile(profile: CpuProfile, top = 25, windowUs?: [number, number]): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) byId.set(n.id, n);
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // Duration of each sample (µs), DevTools style.
  const { samples, timeDeltas } = profile;
  const durations = new Float64Array(samples.length);
  let t = profile.startTime;
  const stamps: number[] = [];
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i] ?? 0;
    stamps.push(t);
  }
  for (let i = 0; i < samples.length; i++) {
    const next = i + 1 < samples.length ? (stamps[i + 1] ?? 0) : profile.endTime;
    durations[i] = Math.max(0, next - (stamps[i] ?? 0));
  }
  // A sample followed by a long gap (the process was descheduled on a busy machine, so the
  // sampler could not run) would otherwise be charged the whole gap: cap each sample at four
  // times the median interval.
  const sortedDurations = Float64Array.from(durations).sort();
  const cap = 4 * (sortedDurations[sortedDurations.length >> 1] ?? 1000);
  for (let i = 0; i < durations.length; i++) durations[i] = Math.min(durations[i] ?? 0, cap);

  const selfByNode = new Map<number, number>();
  let counted = 0;
  for (let i = 0; i < samples.length; i++) {
    const at = stamps[i] ?? 0;
    if (windowUs && (at < windowUs[0] || at > windowUs[1])) continue;
    counted++;
    const id = samples[i] ?? -1;
    selfByNode.set(id, (selfByNode.get(id) ?? 0) + (durations[i] ?? 0));
  }

  let idle = 0;
  let total = 0;
  const selfByName = new Map<string, number>();
  const selfByPkg = new Map<string, number>();
  const folded = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfByNode) {
    total += us;
    const node = byId.get(id);
    if (!node) continue;
    if (node.callFrame.functionName === '(idle)') {
      idle += us;
      continue;
    }
    const name = frameName(node.callFrame);
    selfByName.set(name, (selfByName.get(name) ?? 0) + us);
    const pkg = packageOf(node.callFrame);
    selfByPkg.set(pkg, (selfByPkg.get(pkg) ?? 0) + us);
    // Stack root → leaf, for folded output and inclusive times.
    const stack: CallFrame[] = [];
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur);
      if (n && n.callFrame.functionName !== '(root)') stack.push(n.callFrame);
    }
    stack.reverse();
    const key = stack.map((f) => frameName(f).replace(/;/g, ',')).join(';');
    folded.set(key, (folded.get(key) ?? 0) + us);
    const seen = new Set<string>();
    for (const f of stack) {
      const text = `${f.functionName} ${f.url}`;
      for (const [label, re] of INCLUSIVE_PATTERNS) {
        if (!seen.has(label) && re.test(f.url || text)) seen.add(label);
      }
    }
    for (const label of seen) inclusive.set(label, (inclusive.get(label) ?? 0) + us);
  }
  const busy = total - idle;
  const rows = (m: Map<string, number>, n: number): ProfileRow[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10, pct: busy > 0 ? Math.round((us / busy) * 1000) / 10 : 0 }));
  return {
    totalMs: Math.round(total / 1000),
    idleMs: Math.round(idle / 1000),
    busyMs: Math.round(busy / 1000),
    samples: counted,
    topSelf: rows(selfByName, top),
    byPackage: rows(selfByPkg, top),
    inclusive: rows(inclusive, INCLUSIVE_PATTERNS.length),
    folded: [...folded.entries()].sort((a, b) => b[1] - a[1]).map(([k, us]) => `${k} ${Math.round(us)}`),
  };
}

interface FlameNode {
  name: string;
  value: number;
  children: Map<string, FlameNode>;
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}

function colour(name: string): string {
  if (/node_modules\/(jose)/.test(name) || /^jose\//.test(name.split(' ')[1] ?? '')) return '#e8a33d';
  if (/ dist\//.test(name)) return '#6fb36f';
  if (/ node:/.test(name)) return '#6f9fd8';
  if (/^\(/.test(name)) return '#bbbbbb';
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return `hsl(${10 + (h % 40)}, 75%, ${55 + (h % 15)}%)`;
}

/** A flame graph (root at the bottom) of folded stacks as a standalone SVG with tooltips. */
export function flameSvg(folded: string[], title: string, width = 1400): string {
  const root: FlameNode = { name: 'all', value: 0, children: new Map() };
  for (const line of folded) {
    const sp = line.lastIndexOf(' ');
    const value = Number(line.slice(sp + 1));
    const frames = line.slice(0, sp).split(';');
    root.value += value;
    let cur = root;
    for (const f of frames) {
      let next = cur.children.get(f);
      if (!next) {
        next = { name: f, value: 0, children: new Map() };
        cur.children.set(f, next);
      }
      next.value += value;
      cur = next;
    }
  }
  const rowH = 16;
  const minW = 0.3;
  const rects: string[] = [];
  let depthMax = 0;
  const walk = (n: FlameNode, x: number, depth: number) => {
    const w = (n.value / root.value) * width;
    if (w < minW) return;
    depthMax = Math.max(depthMax, depth);
    rects.push(`${depth}|${x}|${w}|${n.name}|${n.value}`);
    let cx = x;
    for (const c of [...n.children.values()].sort((a, b) => b.value - a.value)) {
      walk(c, cx, depth + 1);
      cx += (c.value / root.value) * width;
    }
  };
  walk(root, 0, 0);
  const height = (depthMax + 1) * rowH + 40;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="monospace" font-size="11">`,
    `<text x="4" y="16" font-size="14">${escapeXml(title)} (width = share of busy CPU time; hover for details)</text>`,
  ];
  for (const r of rects) {
    const [depth, x, w, name, value] = r.split('|') as [string, string, string, string, string];
    const y = height - (Number(depth) + 1) * rowH;
    const pct = ((Number(value) / root.value) * 100).toFixed(2);
    const label = Number(w) > 40 ? escapeXml(name.slice(0, Math.floor(Number(w) / 6.6))) : '';
    out.push(
      `<g><title>${escapeXml(name)} — ${pct}% (${(Number(value) / 1000).toFixed(1)} ms)</title>` +
        `<rect x="${Number(x).toFixed(1)}" y="${y}" width="${Number(w).toFixed(1)}" height="${rowH - 1}" fill="${colour(name)}"/>` +
        (label ? `<text x="${(Number(x) + 3).toFixed(1)}" y="${y + 12}">${label}</text>` : '') +
        '</g>',
    );
  }
  out.push('</svg>');
  return out.join('\n');
}
