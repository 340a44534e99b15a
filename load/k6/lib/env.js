/* global __ENV */
/**
 * Environment parsing for the k6 scenarios: every knob is a `K6_*` variable (set with
 * `k6 run -e NAME=value` or in the environment), with a default that suits a local gate.
 * A malformed value stops the run at init instead of silently falling back to the default.
 *
 * Names avoid k6's own option variables (K6_VUS, K6_DURATION, K6_RPS, K6_ITERATIONS...), which
 * k6 would apply to the run itself.
 */

function raw(name) {
  const v = __ENV[name];
  return v === undefined || v === '' ? undefined : String(v);
}

/** A string variable. */
export function str(name, def) {
  const v = raw(name);
  return v === undefined ? def : v;
}

/** A required string variable. */
export function required(name, why) {
  const v = raw(name);
  if (v === undefined) throw new Error(`${name} is required: ${why}`);
  return v;
}

/** A number variable (integers or decimals, at least `min`). */
export function num(name, def, min = 0) {
  const v = raw(name);
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
  return n;
}

/** A whole-number variable. */
export function int(name, def, min = 0) {
  const n = num(name, def, min);
  if (!Number.isInteger(n)) throw new Error(`${name} must be a whole number, got ${n}`);
  return n;
}

/** A boolean variable: true/false, on/off, 1/0, yes/no. */
export function bool(name, def) {
  const v = raw(name);
  if (v === undefined) return def;
  const s = v.toLowerCase();
  if (s === 'true' || s === 'on' || s === '1' || s === 'yes') return true;
  if (s === 'false' || s === 'off' || s === '0' || s === 'no') return false;
  throw new Error(`${name} must be true or false, got ${JSON.stringify(v)}`);
}

/** A k6 duration (`500ms`, `30s`, `5m`, `1h`, or combinations like `1m30s`). */
export function duration(name, def) {
  const v = str(name, def);
  if (!/^(\d+(ms|s|m|h))+$/.test(v)) throw new Error(`${name} must be a k6 duration such as 30s or 5m, got ${JSON.stringify(v)}`);
  return v;
}

/** A comma-separated list. */
export function list(name, def) {
  const v = raw(name);
  if (v === undefined) return def;
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** A duration in milliseconds, for arithmetic (`startTime` of stepped scenarios). */
export function durationMs(d) {
  let ms = 0;
  const re = /(\d+)(ms|s|m|h)/g;
  let m;
  while ((m = re.exec(d)) !== null) {
    const n = Number(m[1]);
    ms += m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n * 3_600_000;
  }
  return ms;
}

/**
 * Latency and capacity thresholds (p99 per step, dropped iterations) apply to real load runs;
 * `K6_PERF_THRESHOLDS=off` leaves only the functional ones (the smoke run on a shared machine).
 */
export const PERF_THRESHOLDS = bool('K6_PERF_THRESHOLDS', true);

/** Adds `exprs` for `metric` to `thresholds` when perf thresholds are on. */
export function perf(thresholds, metric, exprs) {
  if (PERF_THRESHOLDS) thresholds[metric] = exprs;
  return thresholds;
}

/**
 * `{ rate, timeUnit }` for an arrival-rate executor from a per-second rate that may be
 * fractional (k6 wants a whole `rate`): 0.5/s becomes 1 per 2s.
 */
export function perSecond(r) {
  if (Number.isInteger(r)) return { rate: r, timeUnit: '1s' };
  return { rate: Math.max(1, Math.round(r * 1000)), timeUnit: '1000s' };
}

/** VUs for an arrival rate, assuming iterations of about `iterationMs` (k6 adds VUs up to maxVUs). */
export function vusFor(r, iterationMs) {
  return Math.max(2, Math.ceil((r * iterationMs) / 1000));
}

/** Trend statistics in the summary (p99 is what the latency thresholds use). */
export const TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];
