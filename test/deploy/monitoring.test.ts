/**
 * The monitoring files of deploy/ against the metrics registry: every metric and every
 * fixed-set label value that a Prometheus rule or a Grafana panel names must exist in
 * `createMetrics()`, so renaming a metric or a label value breaks this test, not the alerts.
 *
 * The rule files are read with the `yaml` package (failsafe schema: every scalar stays a
 * string); when `promtool` is on PATH it checks the real files too, compares its rule count
 * with ours, and runs alert unit tests.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ERROR_CODES } from '../../src/errors.js';
import { createMetrics, LABELS } from '../../src/metrics/index.js';

const root = resolve(__dirname, '../..');
const rulesDir = join(root, 'deploy/prometheus');
const dashboardPath = join(root, 'deploy/grafana/agent-gate.json');

// ---------------------------------------------------------------------------------------------
// YAML, read with the failsafe schema: only mappings, sequences and strings.

type Yaml = string | Yaml[] | { [key: string]: Yaml };

function readYaml(file: string): Yaml {
  try {
    return parse(readFileSync(join(rulesDir, file), 'utf8'), { schema: 'failsafe' }) as Yaml;
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`, { cause: err });
  }
}

const isMap = (v: Yaml | undefined): v is { [key: string]: Yaml } => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: Yaml | undefined): string | undefined => (typeof v === 'string' ? v : undefined);

// ---------------------------------------------------------------------------------------------
// The files.

interface Rule {
  file: string;
  group: string;
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

const ruleFiles = existsSync(rulesDir) ? readdirSync(rulesDir).filter((f) => /\.ya?ml$/.test(f)).sort() : [];
const rules: Rule[] = [];
const groupNames: string[] = [];
for (const file of ruleFiles) {
  const doc = readYaml(file);
  if (!isMap(doc) || !Array.isArray(doc.groups)) throw new Error(`${file}: no top-level "groups" list`);
  for (const g of doc.groups) {
    if (!isMap(g) || !str(g.name) || !Array.isArray(g.rules)) throw new Error(`${file}: a group without name or rules`);
    groupNames.push(str(g.name)!);
    for (const r of g.rules) {
      if (!isMap(r)) throw new Error(`${file}: a rule that is not a mapping`);
      const flat = (v: Yaml | undefined) =>
        Object.fromEntries(Object.entries(isMap(v) ? v : {}).map(([k, x]) => [k, typeof x === 'string' ? x : JSON.stringify(x)]));
      rules.push({
        file,
        group: str(g.name)!,
        alert: str(r.alert),
        record: str(r.record),
        expr: str(r.expr) ?? '',
        for: str(r.for),
        labels: flat(r.labels),
        annotations: flat(r.annotations),
      });
    }
  }
}
const alerts = rules.filter((r) => r.alert !== undefined);
const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: { refId: string; expr: string; datasource?: { uid?: string } }[];
  panels?: Panel[];
}
interface Dashboard {
  schemaVersion: number;
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown; definition?: string }[] };
}
const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as Dashboard;
const allPanels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const dataPanels = allPanels.filter((p) => p.type !== 'row');
const panelExprs = dataPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel ${p.id} "${p.title}" ${t.refId}`, expr: t.expr })));
const variableExprs = dashboard.templating.list
  .filter((v) => v.type === 'query')
  .map((v) => ({ where: `variable ${v.name}`, expr: typeof v.query === 'string' ? v.query : String((v.query as { query?: string }).query ?? '') }));

const exprs = [
  ...rules.map((r) => ({ where: `${r.file} ${r.alert ?? r.record}`, expr: r.expr })),
  ...panelExprs,
  ...variableExprs,
];

// ---------------------------------------------------------------------------------------------
// The registry and the contract's label sets.

const registry = createMetrics().registry;
const registered = await registry.getMetricsAsJSON();
const types = new Map(registered.map((m) => [m.name, String(m.type)]));
const HISTOGRAM_SUFFIX = /_(bucket|count|sum)$/;

/** The metric a series name belongs to (histogram series without their suffix), or undefined. */
function metricOf(series: string): string | undefined {
  if (types.has(series)) return series;
  const base = series.replace(HISTOGRAM_SUFFIX, '');
  return base !== series && types.get(base) === 'histogram' ? base : undefined;
}

/** The fixed-set labels of each gate metric: the sets of src/metrics (LABELS) and src/errors. */
const FIXED: Record<string, Record<string, readonly string[]>> = {
  agent_gate_challenges_issued_total: {},
  agent_gate_tokens_issued_total: {},
  agent_gate_proofs_total: { result: LABELS.proofResult },
  agent_gate_replays_detected_total: { kind: LABELS.replayKind },
  agent_gate_rate_limited_total: { limiter: LABELS.limiter },
  agent_gate_revocation_checks_total: { method: LABELS.revocationMethod, result: LABELS.revocationResult },
  agent_gate_revocation_cache_hits_total: { method: LABELS.revocationMethod },
  agent_gate_revocation_fail_open_total: {},
  agent_gate_forwarded_verifications_total: { result: LABELS.forwardedResult },
  agent_gate_errors_total: { code: ERROR_CODES },
  agent_gate_load_shed_total: { reason: LABELS.shedReason },
  agent_gate_store_errors_total: {},
  agent_gate_inflight_requests: {},
  agent_gate_request_duration_seconds: { route: LABELS.route },
  agent_gate_signature_verification_seconds: { alg: LABELS.alg },
  agent_gate_authz_decisions_total: { result: LABELS.authzResult },
  agent_gate_connections_refused_total: { limit: LABELS.connectionLimit },
  agent_gate_connection_timeouts_total: { phase: LABELS.connectionPhase },
  agent_gate_open_connections: {},
  agent_gate_worker_restarts_total: {},
  agent_gate_audit_dropped_total: {},
  agent_gate_audit_pending_records: {},
};
/** Labels the scrape adds, and `le` on histogram buckets. */
const TARGET_LABELS = ['job', 'instance'];

const stripStrings = (expr: string) => expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
/** Every metric-name-like token of an expression, outside string literals and selectors' braces. */
function seriesNames(expr: string): string[] {
  const bare = stripStrings(expr).replace(/\{[^}]*\}/g, '{}');
  return [...bare.matchAll(/(?<![\w:$.])[a-zA-Z_:][\w:]*/g)]
    .map((m) => m[0])
    .filter((n) => /^(agent_gate_|process_|nodejs_)/.test(n) || n.includes(':'));
}

interface Matcher {
  metric: string;
  label: string;
  op: string;
  value: string;
}
function matchers(expr: string): Matcher[] {
  const out: Matcher[] = [];
  for (const sel of expr.matchAll(/([a-zA-Z_:][\w:]*)\s*\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\}/g)) {
    for (const m of sel[2]!.matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)) {
      out.push({ metric: sel[1]!, label: m[1]!, op: m[2]!, value: JSON.parse(`"${m[3]!}"`) as string });
    }
  }
  return out;
}


// ---------------------------------------------------------------------------------------------

describe('deploy/ monitoring: metric and label names', () => {
  it('found rule files, alerts and dashboard queries to check', () => {
    expect(ruleFiles).toContain('alerts.yml');
    expect(alerts.length).toBeGreaterThanOrEqual(10);
    expect(panelExprs.length).toBeGreaterThanOrEqual(15);
  });

  it('the label sets this test uses are exactly those of the registry', () => {
    const gateMetrics = registered.filter((m) => m.name.startsWith('agent_gate_')).map((m) => m.name);
    expect(Object.keys(FIXED).sort()).toEqual(gateMetrics.sort());
    for (const m of registered.filter((x) => x.name in FIXED && String(x.type) !== 'histogram')) {
      for (const [label, set] of Object.entries(FIXED[m.name]!)) {
        const seen = new Set(m.values.map((v) => String(v.labels[label])));
        expect([...seen].sort(), `${m.name}{${label}}`).toEqual([...set].sort());
      }
    }
  });

  it('every metric an expression names exists in createMetrics() (or is a recording rule)', () => {
    const unknown: string[] = [];
    let checked = 0;
    for (const { where, expr } of exprs) {
      for (const name of seriesNames(expr)) {
        checked++;
        if (name.includes(':') ? !recorded.has(name) : metricOf(name) === undefined) unknown.push(`${where}: ${name}`);
      }
      // The contract's own pattern, as a second net that does not depend on the tokenizer above.
      for (const [name] of stripStrings(expr).matchAll(/agent_gate_[a-z_]+/g)) {
        if (metricOf(name) === undefined) unknown.push(`${where}: ${name}`);
      }
    }
    expect(checked).toBeGreaterThan(30);
    expect(unknown).toEqual([]);
  });

  it('every label matcher names a label of its metric, and fixed-set values come from the contract', () => {
    const problems: string[] = [];
    let checked = 0;
    for (const { where, expr } of exprs) {
      for (const m of matchers(expr)) {
        const metric = metricOf(m.metric);
        if (metric === undefined) continue; // up{...}, recorded series: names checked elsewhere
        const fixed = FIXED[metric] ?? {};
        const allowed = [...Object.keys(fixed), ...TARGET_LABELS, ...(m.metric.endsWith('_bucket') ? ['le'] : [])];
        if (!allowed.includes(m.label)) {
          problems.push(`${where}: ${m.metric} has no label ${m.label}`);
          continue;
        }
        const set = fixed[m.label];
        if (!set) continue;
        checked++;
        if (m.op === '=' || m.op === '!=') {
          if (!set.includes(m.value)) problems.push(`${where}: ${m.label}${m.op}"${m.value}" is not in the set of ${metric}`);
        } else {
          const re = new RegExp(`^(?:${m.value})$`);
          if (!set.some((v) => re.test(v))) problems.push(`${where}: ${m.label}${m.op}"${m.value}" matches no value of ${metric}`);
          if (/^[\w|]+$/.test(m.value)) {
            for (const alt of m.value.split('|')) {
              if (!set.includes(alt)) problems.push(`${where}: ${m.label}${m.op}"${m.value}": "${alt}" is not in the set of ${metric}`);
            }
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(10);
    expect(problems).toEqual([]);
  });

  it('every label a by()/without() clause names is carried by a metric of the expression', () => {
    const problems: string[] = [];
    for (const { where, expr } of exprs) {
      const metrics = seriesNames(expr).map(metricOf).filter((m): m is string => m !== undefined);
      const carried = new Set([...TARGET_LABELS, 'le', ...metrics.flatMap((m) => Object.keys(FIXED[m] ?? {}))]);
      for (const clause of stripStrings(expr).matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
        for (const label of clause[1]!.split(',').map((s) => s.trim()).filter(Boolean)) {
          if (!carried.has(label)) problems.push(`${where}: grouping by ${label}, which none of ${metrics.join(', ')} carries`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('the dashboard shows every gate metric at least once', () => {
    const shown = new Set(panelExprs.flatMap(({ expr }) => seriesNames(expr).map(metricOf)));
    expect(Object.keys(FIXED).filter((m) => !shown.has(m))).toEqual([]);
  });
});

describe('deploy/prometheus: rules', () => {
  it('group names are unique and alert names are unique', () => {
    expect(new Set(groupNames).size).toBe(groupNames.length);
    const names = alerts.map((a) => a.alert);
    expect(new Set(names).size).toBe(names.length);
  });

  it('every rule is an alert or a recording rule with an expression', () => {
    for (const r of rules) {
      expect(r.alert === undefined ? 0 : 1, `${r.file}: rule with both or neither of alert/record`).toBe(r.record === undefined ? 1 : 0);
      expect(r.expr.trim(), `${r.alert ?? r.record}: expr`).not.toBe('');
      if (r.record) expect(r.record).toMatch(/^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$/);
    }
  });

  it('every alert has for, a severity, a summary, a description and one runbook link, its runbook_url page', () => {
    for (const a of alerts) {
      expect(a.for, `${a.alert}: for`).toMatch(/^\d+[smh]$/);
      expect(['critical', 'warning', 'info'], `${a.alert}: labels.severity`).toContain(a.labels.severity);
      expect(a.annotations.summary?.trim(), `${a.alert}: summary`).toBeTruthy();
      expect(a.annotations.description?.trim(), `${a.alert}: description`).toBeTruthy();
      // One source: the runbook page (test/docs/runbooks.test.ts checks it exists) links the
      // HARDENING.md background; a second annotation into HARDENING.md anchors would drift.
      expect(a.annotations.runbook_url, `${a.alert}: runbook_url`).toBe(`docs/operations/runbooks/${a.alert}.md`);
      expect(a.annotations.runbook, `${a.alert}: no second runbook annotation`).toBeUndefined();
    }
  });

  it('the alerts the deployment relies on are all there', () => {
    const uses = (re: RegExp) => alerts.filter((a) => re.test(a.expr)).map((a) => a.alert);
    expect(uses(/agent_gate_replays_detected_total/)).not.toEqual([]);
    expect(uses(/agent_gate_proofs_total\{[^}]*result!="accepted"/)).not.toEqual([]);
    expect(uses(/agent_gate_forwarded_verifications_total\{[^}]*bad_signature/)).not.toEqual([]);
    expect(uses(/histogram_quantile\(0\.99,[\s\S]*route=~?"[^"]*token/)).not.toEqual([]);
    expect(uses(/histogram_quantile\(0\.99,[\s\S]*route=~?"[^"]*proxy/)).not.toEqual([]);
    expect(uses(/agent_gate_load_shed_total/)).not.toEqual([]);
    expect(uses(/agent_gate_rate_limited_total/)).not.toEqual([]);
    expect(uses(/code="revocation_unavailable"/)).not.toEqual([]);
    expect(uses(/agent_gate_revocation_checks_total\{[^}]*result=~"error\|unknown"/)).not.toEqual([]);
    expect(uses(/agent_gate_store_errors_total/)).not.toEqual([]);
    expect(uses(/code="store_unavailable"/)).not.toEqual([]);
    expect(uses(/code=~"upstream_/)).not.toEqual([]);
    expect(uses(/\bup\{job="agent-gate"\} == 0/)).not.toEqual([]);
    expect(uses(/agent_gate_inflight_requests/)).not.toEqual([]);
  });
});

describe('deploy/grafana: dashboard', () => {
  it('is schemaVersion 39 with a datasource variable and job/instance variables', () => {
    expect(dashboard.schemaVersion).toBe(39);
    expect(dashboard.uid).toMatch(/^[\w-]{1,40}$/);
    const vars = new Map(dashboard.templating.list.map((v) => [v.name, v]));
    expect(vars.get('datasource')?.type).toBe('datasource');
    expect(vars.get('job')?.type).toBe('query');
    expect(vars.get('instance')?.type).toBe('query');
  });

  it('panel ids are unique positive integers', () => {
    const ids = allPanels.map((p) => p.id);
    expect(ids.every((id) => Number.isInteger(id) && id > 0)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('every gridPos is valid and no two panels overlap', () => {
    const boxes = allPanels.map((p) => ({ id: p.id, ...p.gridPos }));
    for (const b of boxes) {
      for (const k of ['h', 'w', 'x', 'y'] as const) expect(Number.isInteger(b[k]), `panel ${b.id} gridPos.${k}`).toBe(true);
      expect(b.w, `panel ${b.id} width`).toBeGreaterThanOrEqual(1);
      expect(b.h, `panel ${b.id} height`).toBeGreaterThanOrEqual(1);
      expect(b.x, `panel ${b.id} x`).toBeGreaterThanOrEqual(0);
      expect(b.y, `panel ${b.id} y`).toBeGreaterThanOrEqual(0);
      expect(b.x + b.w, `panel ${b.id} right edge`).toBeLessThanOrEqual(24);
    }
    for (const [i, a] of boxes.entries()) {
      for (const b of boxes.slice(i + 1)) {
        const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
        expect(overlap, `panels ${a.id} and ${b.id} overlap`).toBe(false);
      }
    }
  });

  it('every query panel uses the datasource variable and filters on $job and $instance', () => {
    for (const p of dataPanels) {
      expect(p.datasource?.uid, `panel ${p.id} datasource`).toBe('${datasource}');
      expect(p.targets?.length, `panel ${p.id} targets`).toBeGreaterThan(0);
      const refIds = p.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, `panel ${p.id} refIds`).toBe(refIds.length);
      for (const t of p.targets!) {
        const selectors = [...t.expr.matchAll(/[a-zA-Z_:][\w:]*\s*\{[^}]*\}/g)].map((m) => m[0]);
        expect(selectors.length, `panel ${p.id} ${t.refId}: no selector`).toBeGreaterThan(0);
        for (const s of selectors) {
          expect(s, `panel ${p.id} ${t.refId}`).toContain('job=~"$job"');
          expect(s, `panel ${p.id} ${t.refId}`).toContain('instance=~"$instance"');
        }
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// promtool, the authoritative parser, when it is installed (the test setup takes it from Debian's `prometheus` package).

const promtool = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).stdout.trim();
if (!promtool) {
  console.warn('test/deploy/monitoring: promtool not on PATH (the test setup installs it as root: test/setup/system.ts): promtool checks skipped');
}
const whenSkipped = promtool ? '' : ' (skipped: promtool not on PATH)';
const work = mkdtempSync(join(tmpdir(), 'agent-gate-promtool-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function runPromtool(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(promtool, args, { encoding: 'utf8', cwd: work, timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe('deploy/prometheus: promtool', () => {
  it.skipIf(!promtool)(`promtool check rules accepts every rule file, with as many rules as this test read${whenSkipped}`, () => {
    for (const file of ruleFiles) {
      const { status, out } = runPromtool(['check', 'rules', join(rulesDir, file)]);
      expect(status, out).toBe(0);
      expect(out).toContain(`SUCCESS: ${rules.filter((r) => r.file === file).length} rules found`);
    }
  });

  it.skipIf(!promtool)(`promtool test rules: the alerts fire on the series they are for, and only then${whenSkipped}`, () => {
    // promtool compares annotations too; the templated ones are checked by `check rules`, so
    // the unit tests run on a copy without annotations (JSON is YAML).
    const stripped = {
      groups: [...new Set(rules.map((r) => r.group))].map((name) => ({
        name,
        rules: rules
          .filter((r) => r.group === name)
          .map((r) => (r.alert ? { alert: r.alert, expr: r.expr, for: r.for, labels: r.labels } : { record: r.record, expr: r.expr })),
      })),
    };
    writeFileSync(join(work, 'rules.yml'), JSON.stringify(stripped, null, 2));
    const J = 'job="agent-gate", instance="gate-1:9464"';
    const job = { job: 'agent-gate' };
    const alert = (name: string, at: string, exp: Record<string, string>[]) => ({ eval_time: at, alertname: name, exp_alerts: exp.map((l) => ({ exp_labels: l })) });
    const tests = [
      {
        input_series: [{ series: `up{${J}}`, values: '1 1 0x10' }],
        alert_rule_test: [
          alert('AgentGateDown', '3m', []),
          alert('AgentGateDown', '5m', [{ severity: 'critical', job: 'agent-gate', instance: 'gate-1:9464' }]),
          alert('AgentGateAbsent', '12m', []),
        ],
      },
      {
        input_series: [
          { series: `agent_gate_replays_detected_total{${J}, kind="challenge"}`, values: '0+60x20' },
          { series: `agent_gate_replays_detected_total{${J}, kind="forwarded"}`, values: '0x20' },
        ],
        alert_rule_test: [alert('AgentGateReplaySpike', '15m', [{ severity: 'warning', ...job, kind: 'challenge' }])],
      },
      {
        input_series: [
          { series: `agent_gate_proofs_total{${J}, result="accepted"}`, values: '0+30x30' },
          { series: `agent_gate_proofs_total{${J}, result="invalid"}`, values: '0+30x30' },
        ],
        alert_rule_test: [alert('AgentGateProofFailureRatioHigh', '25m', [{ severity: 'warning', ...job }])],
      },
      {
        // All proofs fail, but one a minute is below the minimum volume.
        input_series: [{ series: `agent_gate_proofs_total{${J}, result="invalid"}`, values: '0+1x30' }],
        alert_rule_test: [alert('AgentGateProofFailureRatioHigh', '25m', [])],
      },
      {
        input_series: [
          { series: `agent_gate_forwarded_verifications_total{${J}, result="ok"}`, values: '0+600x20' },
          { series: `agent_gate_forwarded_verifications_total{${J}, result="bad_signature"}`, values: '0+6x20' },
        ],
        alert_rule_test: [
          alert('AgentGateForwardedSignatureInvalid', '15m', [{ severity: 'critical', ...job, result: 'bad_signature' }]),
          alert('AgentGateForwardedStale', '15m', []),
        ],
      },
      {
        // Every token request takes between 0.5 s and 1 s; challenges are fast.
        input_series: [
          { series: `agent_gate_request_duration_seconds_bucket{${J}, route="token", le="0.5"}`, values: '0x30' },
          { series: `agent_gate_request_duration_seconds_bucket{${J}, route="token", le="1"}`, values: '0+60x30' },
          { series: `agent_gate_request_duration_seconds_bucket{${J}, route="token", le="+Inf"}`, values: '0+60x30' },
          { series: `agent_gate_request_duration_seconds_count{${J}, route="token"}`, values: '0+60x30' },
          { series: `agent_gate_request_duration_seconds_bucket{${J}, route="challenge", le="0.01"}`, values: '0+60x30' },
          { series: `agent_gate_request_duration_seconds_bucket{${J}, route="challenge", le="+Inf"}`, values: '0+60x30' },
          { series: `agent_gate_request_duration_seconds_count{${J}, route="challenge"}`, values: '0+60x30' },
        ],
        alert_rule_test: [
          alert('AgentGateIssuanceLatencyHigh', '20m', [{ severity: 'warning', ...job, route: 'token' }]),
          alert('AgentGateProxyLatencyHigh', '20m', []),
        ],
      },
      {
        input_series: [
          { series: `agent_gate_load_shed_total{${J}, reason="concurrency"}`, values: '0x20' },
          { series: `agent_gate_load_shed_total{${J}, reason="event_loop"}`, values: '0+10x20' },
          { series: `agent_gate_rate_limited_total{${J}, limiter="failed_proof"}`, values: '0+120x20' },
          { series: `agent_gate_inflight_requests{${J}}`, values: '900x20' },
        ],
        alert_rule_test: [
          alert('AgentGateLoadShedding', '15m', [{ severity: 'warning', ...job, reason: 'event_loop' }]),
          alert('AgentGateRateLimitSurge', '15m', [{ severity: 'warning', ...job, limiter: 'failed_proof' }]),
          alert('AgentGateInflightNearCapacity', '15m', [{ severity: 'warning', ...job, instance: 'gate-1:9464' }]),
        ],
      },
      {
        input_series: [
          { series: `agent_gate_errors_total{${J}, code="revocation_unavailable"}`, values: '0+5x20' },
          { series: `agent_gate_errors_total{${J}, code="store_unavailable"}`, values: '0+5x20' },
          { series: `agent_gate_store_errors_total{${J}}`, values: '0+5x20' },
          { series: `agent_gate_revocation_checks_total{${J}, method="ocsp", result="error"}`, values: '0+6x30' },
          { series: `agent_gate_revocation_checks_total{${J}, method="ocsp", result="good"}`, values: '0+6x30' },
          { series: `agent_gate_revocation_checks_total{${J}, method="crl", result="good"}`, values: '0+6x30' },
        ],
        alert_rule_test: [
          alert('AgentGateRevocationUnavailable', '15m', [{ severity: 'critical', ...job }]),
          alert('AgentGateRevocationChecksFailing', '25m', [{ severity: 'warning', ...job, method: 'ocsp' }]),
          alert('AgentGateStoreErrors', '15m', [{ severity: 'warning', ...job }]),
          alert('AgentGateStoreUnavailable', '15m', [{ severity: 'critical', ...job }]),
        ],
      },
      {
        // 0.5/s of 5/s proxied requests time out upstream: 10%.
        input_series: [
          { series: `agent_gate_errors_total{${J}, code="upstream_timeout"}`, values: '0+30x20' },
          { series: `agent_gate_request_duration_seconds_count{${J}, route="proxy"}`, values: '0+300x20' },
        ],
        alert_rule_test: [alert('AgentGateUpstreamFailures', '15m', [{ severity: 'warning', ...job }])],
      },
      {
        // A trail that stops being written at 5m: the backlog grows 5,000 a minute, passes
        // 20,000 at 10m (firing a minute later); from 26m events are dropped.
        input_series: [
          { series: `agent_gate_audit_pending_records{${J}}`, values: '50x5 5000+5000x18 100000x10' },
          { series: `agent_gate_audit_dropped_total{${J}}`, values: '0x24 0+700x10' },
        ],
        alert_rule_test: [
          alert('AgentGateAuditBacklog', '10m', []),
          alert('AgentGateAuditBacklog', '12m', [{ severity: 'warning', ...job, instance: 'gate-1:9464' }]),
          alert('AgentGateAuditDropping', '20m', []),
          alert('AgentGateAuditDropping', '26m', [{ severity: 'critical', ...job, instance: 'gate-1:9464' }]),
        ],
      },
    ].map((t) => ({ interval: '1m', ...t }));
    writeFileSync(join(work, 'tests.yml'), JSON.stringify({ rule_files: ['rules.yml'], evaluation_interval: '1m', tests }, null, 2));
    const { status, out } = runPromtool(['test', 'rules', 'tests.yml']);
    expect(status, out).toBe(0);
    expect(out).toContain('SUCCESS');
  });
});
