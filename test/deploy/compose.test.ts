/**
 * The compose stack (docker-compose.yml, deploy/compose/) and the image (Dockerfile,
 * .dockerignore), validated without a docker engine:
 *
 * - schema: Debian's `docker-compose` (v1, `config -q`: unknown keys, wrong types, undefined
 *   `depends_on` services) when it is on PATH, and `dclint` (compose-spec JSON schema, plus its
 *   rules as configured in deploy/compose/dclint.json) always; each with a broken copy as a
 *   negative control, so a validator that silently validates nothing fails the test;
 * - structure, parsed with `yaml` under YAML 1.1 (docker-compose v1) and 1.2 (compose v2), after
 *   compose's own variable interpolation: the services and their wiring (names, ports, addresses,
 *   mounts and the files behind them), Redis' password and persistence, hardening, and every
 *   GATE_* name checked against `envSchema`;
 * - the gates' environment through the gate's own `loadConfig` (no violation) and
 *   `loadMaterials`, over the files that deploy/compose/pki-init.sh really writes (run here
 *   with the run's bundle of src/cli/main.ts instead of the image's `agent-gate`, into temp dirs
 *   standing for the volumes);
 * - the Dockerfile's stages, user, HEALTHCHECK (the probe script is run against live servers),
 *   entry point and what it copies, against .dockerignore;
 * - the stack itself on loopback, when nginx with njs and redis-server are available (as for
 *   test/nginx): redis with the compose arguments, the OCSP responder, the demo upstream, both
 *   gates with the compose environment (hosts and ports mapped to loopback), nginx with the
 *   configuration pki-init rendered; an agent completes the flow through nginx and a revoked
 *   agent is refused.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join, posix, relative, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config/index.js';
import { envSchema } from '../../src/config/schema.js';
import { NJS_MODULE_PATH } from '../../src/nginx/index.js';
import { loadMaterials } from '../../src/services.js';
import { ensureNginx, nginxTest, startNginx, type RunningNginx } from '../nginx/harness.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { cliArgv } from '../helpers/serve.js';

const root = resolve(__dirname, '../..');
const COMPOSE_FILE = join(root, 'docker-compose.yml');
const composeText = readFileSync(COMPOSE_FILE, 'utf8');
const dockerfileText = readFileSync(join(root, 'Dockerfile'), 'utf8');
const dockerignoreText = readFileSync(join(root, '.dockerignore'), 'utf8');
const PKI_INIT = join(root, 'deploy/compose/pki-init.sh');
const HEALTHCHECK = join(root, 'deploy/compose/healthcheck.mjs');
/** The agent-gate CLI from source (the run's bundle of src/cli/main.ts), as the other suites run it. */
const CLI = [process.execPath, ...cliArgv()];

const EXPECTED_SERVICES = ['gate-authz', 'gate1', 'gate2', 'k6', 'nginx', 'nginx-authz', 'ocsp', 'pki-init', 'redis', 'upstream'];
const GATES = ['gate1', 'gate2'] as const;
/** Every gate process: the forwarded pair and the authorizer profile's gate. */
const ALL_GATES = [...GATES, 'gate-authz'] as const;
/** The services of the `authorizer` profile. */
const AUTHZ_SERVICES = ['gate-authz', 'nginx-authz'];

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- compose data is untyped; every use is checked by an expect
type Obj = Record<string, any>;

// ---------------------------------------------------------------------------------------------
// Reading the compose file: YAML 1.1 and 1.2, then compose's interpolation.

function parseYaml(text: string, version: '1.1' | '1.2'): unknown {
  const docs = parseAllDocuments(text, { version, prettyErrors: true });
  if (!Array.isArray(docs) || docs.length !== 1) throw new Error('docker-compose.yml must hold exactly one YAML document');
  const doc = docs[0]!;
  if (doc.errors.length > 0) throw new Error(doc.errors.map((e) => e.message).join('; '));
  if (doc.warnings.length > 0) throw new Error(doc.warnings.map((e) => e.message).join('; '));
  return doc.toJS({ maxAliasCount: 100 }) as unknown;
}

/** The path and values where two parsed documents first differ, or undefined. */
function firstDifference(a: unknown, b: unknown, path: string): string | undefined {
  if (typeof a === 'object' && a !== null && typeof b === 'object' && b !== null) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const d = firstDifference((a as Obj)[k], (b as Obj)[k], `${path}/${k}`);
      if (d) return d;
    }
    return undefined;
  }
  return Object.is(a, b) ? undefined : `${path || '/'}: ${JSON.stringify(a)} (1.1) vs ${JSON.stringify(b)} (1.2)`;
}

/**
 * Compose's interpolation of one string: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
 * `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`. Nested forms are refused (not used here).
 */
function interpolate(value: string, env: Record<string, string | undefined>, where: string): string {
  return value.replace(/\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_m, dollar: string | undefined, braced: string | undefined, bare: string | undefined) => {
    if (dollar) return '$';
    if (bare) return env[bare] ?? '';
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])(.*))?$/s.exec(braced!);
    if (!m) throw new Error(`${where}: unsupported interpolation \${${braced}}`);
    const [, name, colon, op, arg] = m as unknown as [string, string, string, string | undefined, string];
    if (arg.includes('$')) throw new Error(`${where}: nested interpolation in \${${braced}}`);
    const v = env[name!];
    const unset = v === undefined || (colon === ':' && v === '');
    if (op === '-') return unset ? arg : v!;
    if (op === '?') {
      if (unset) throw new Error(`${where}: required variable ${name} is missing: ${arg}`);
      return v!;
    }
    return v ?? '';
  });
}

/** Interpolates every string value (not keys), as compose does. */
function interpolateAll(node: unknown, env: Record<string, string | undefined>, where = ''): unknown {
  if (typeof node === 'string') return interpolate(node, env, where || '/');
  if (Array.isArray(node)) return node.map((v, i) => interpolateAll(v, env, `${where}/${i}`));
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolateAll(v, env, `${where}/${k}`)]));
  return node;
}

const raw = parseYaml(composeText, '1.2') as Obj;
const REDIS_PASSWORD = randomBytes(24).toString('hex');
const FWD_HMAC_SECRET = randomBytes(32).toString('base64');
const BASE_ENV = { REDIS_PASSWORD, FWD_HMAC_SECRET };
/** The compose file as `docker compose` sees it with only the two required variables set. */
const compose = interpolateAll(raw, BASE_ENV) as Obj;
const services = compose.services as Record<string, Obj>;

/** `environment` as a map (compose also allows a list of NAME=value). */
function envOf(service: Obj): Record<string, string> {
  const e = service.environment ?? {};
  if (Array.isArray(e)) return Object.fromEntries(e.map((s: string) => [s.slice(0, s.indexOf('=')), s.slice(s.indexOf('=') + 1)]));
  return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, v === null ? '' : String(v)]));
}

interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
  named: boolean;
}

/** The short-syntax `volumes` of a service. */
function mountsOf(service: Obj): Mount[] {
  return (service.volumes ?? []).map((v: unknown) => {
    expect(typeof v, 'volumes use the short syntax SOURCE:TARGET[:ro]').toBe('string');
    const [source, target, mode] = (v as string).split(':') as [string, string, string | undefined];
    return { source, target, readOnly: mode === 'ro', named: !source.startsWith('.') && !source.startsWith('/') };
  });
}

function dependsOn(service: Obj): Record<string, string> {
  const d = service.depends_on ?? {};
  if (Array.isArray(d)) return Object.fromEntries(d.map((n: string) => [n, 'service_started']));
  return Object.fromEntries(Object.entries(d).map(([k, v]) => [k, (v as Obj).condition ?? 'service_started']));
}

function networksOf(service: Obj): Record<string, Obj> {
  const n = service.networks ?? {};
  if (Array.isArray(n)) return Object.fromEntries(n.map((k: string) => [k, {}]));
  return Object.fromEntries(Object.entries(n).map(([k, v]) => [k, (v ?? {}) as Obj]));
}

/** host and port of `scheme://host:port`. */
function hostPortOf(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}

function argAfter(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

const AGENT_GATE_IMAGE = services['gate1']!.image as string;
const agentGateServices = Object.keys(services).filter((n) => services[n]!.image === AGENT_GATE_IMAGE);

// ---------------------------------------------------------------------------------------------
// The Dockerfile, as instructions per stage.

interface Instruction {
  keyword: string;
  args: string;
}

function dockerInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let current = '';
  for (const line of text.split('\n')) {
    if (/^\s*#/.test(line)) continue;
    if (current === '' && line.trim() === '') continue;
    if (/\\\s*$/.test(line)) {
      current += line.replace(/\\\s*$/, ' ');
      continue;
    }
    current += line;
    const m = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(current);
    if (!m) throw new Error(`Dockerfile: cannot parse ${JSON.stringify(current)}`);
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.replace(/\s+/g, ' ').trim() });
    current = '';
  }
  return out;
}

const instructions = dockerInstructions(dockerfileText);
const stages: { name: string; from: string; body: Instruction[] }[] = [];
for (const ins of instructions) {
  if (ins.keyword === 'FROM') {
    const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
    stages.push({ from: m?.[1] ?? '', name: m?.[2] ?? '', body: [] });
  } else if (stages.length > 0) stages.at(-1)!.body.push(ins);
}
const finalStage = stages.at(-1)!;
const of = (stage: (typeof stages)[number], keyword: string) => stage.body.filter((i) => i.keyword === keyword);
const execForm = (args: string): string[] => JSON.parse(args) as string[];

/** What `COPY` (without --from) copies from the build context, and to where. */
function contextCopies(): { sources: string[]; dest: string }[] {
  return instructions
    .filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')
    .filter((i) => !/--from=/.test(i.args))
    .map((i) => {
      const parts = i.args.split(' ').filter((p) => !p.startsWith('--'));
      return { sources: parts.slice(0, -1), dest: parts.at(-1)! };
    });
}

// .dockerignore: the patterns it has, matched the way the builder does (path or any parent).
const ignorePatterns = dockerignoreText
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));

function globToRegExp(glob: string): RegExp {
  let re = '';
  const g = posix.normalize(glob.replace(/^\/+/, ''));
  for (let i = 0; i < g.length; i++) {
    const c = g[i]!;
    if (c === '*' && g[i + 1] === '*') {
      re += g[i + 2] === '/' ? '(?:.*/)?' : '.*';
      i += g[i + 2] === '/' ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function dockerIgnored(path: string): boolean {
  let ignored = false;
  const parts = path.split('/');
  for (const pattern of ignorePatterns) {
    const negate = pattern.startsWith('!');
    const re = globToRegExp(negate ? pattern.slice(1) : pattern);
    for (let n = 1; n <= parts.length; n++) {
      if (re.test(parts.slice(0, n).join('/'))) {
        ignored = !negate;
        break;
      }
    }
  }
  return ignored;
}

function gitFiles(under: string): string[] {
  const r = spawnSync('git', ['ls-files', under], { cwd: root, encoding: 'utf8' });
  if (r.status === 0 && r.stdout.trim()) return r.stdout.trim().split('\n');
  // Not a git checkout: walk the tree.
  const walk = (d: string): string[] =>
    readdirSync(join(root, d), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]));
  return existsSync(join(root, under)) ? (statSync(join(root, under)).isDirectory() ? walk(under) : [under]) : [];
}

// ---------------------------------------------------------------------------------------------
// Running things.

function commandExists(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

function runAsync(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd ?? root, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 90_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolvePromise({ status, stdout, stderr });
    });
  });
}

/** A minimal environment: no stray GATE_* (or npm) variables of the test process leak in. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const keep = ['PATH', 'HOME', 'TMPDIR', 'LANG', 'SYSTEMROOT'];
  return { ...Object.fromEntries(keep.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]!])), ...extra };
}

// ---------------------------------------------------------------------------------------------
// The volumes, as temp dirs, filled by pki-init.sh.

let work: string;
/** Host directory standing for each named volume. */
const volumeDirs: Record<string, string> = {};
/** pki-init's stderr and the volume files' digests after each run. */
const runs: { stderr: string; files: Record<string, string> }[] = [];
let e2eNginxDir: string;
let e2eNginxPort: number;
/** Public ports of gate1 and gate2 in the loopback stack (nginx is rendered against gate1's). */
let e2eGatePorts: number[] = [];

/** The host path of `containerPath` as `service` sees it, through its named-volume mounts. */
function hostPath(service: string, containerPath: string): string {
  const m = mountsOf(services[service]!).find((mt) => mt.named && (containerPath === mt.target || containerPath.startsWith(`${mt.target}/`)));
  if (!m) throw new Error(`${service}: ${containerPath} is on no named volume of the service`);
  return join(volumeDirs[m.source]!, relative(m.target, containerPath));
}

/** The gate's compose environment with its file paths mapped onto the temp volumes. */
function gateEnvOnHost(service: string): Record<string, string> {
  const env = envOf(services[service]!);
  for (const [k, v] of Object.entries(env)) {
    if (/_(CERT|KEY|CA|FILE|FILES|REGISTRY)$/.test(k) && v.startsWith('/')) env[k] = v.split(',').map((p) => hostPath(service, p)).join(',');
  }
  return env;
}

function snapshot(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, dir] of Object.entries(volumeDirs)) {
    const walk = (d: string): void => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else out[`${name}/${relative(dir, p)}`] = readFileSync(p, 'base64');
      }
    };
    walk(dir);
  }
  return out;
}

/** Runs pki-init.sh with the compose service's environment, the volumes mapped to temp dirs. */
async function runPkiInit(overrides: Record<string, string> = {}): Promise<Ran> {
  const svc = services['pki-init']!;
  const env = cleanEnv({
    ...envOf(svc),
    PKI_DIR: hostPath('pki-init', '/var/lib/agent-gate/pki'),
    SECRETS_DIR: hostPath('pki-init', '/var/lib/agent-gate/secrets'),
    NGINX_DIR: hostPath('pki-init', '/var/lib/agent-gate/nginx'),
    AGENT_GATE: CLI.join(' '),
    NODE: process.execPath,
    AGENT_GATE_PKI_MODULE: inject('pkiModule'),
    ...overrides,
  });
  return runAsync('sh', [PKI_INIT], { env, timeoutMs: 120_000 });
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'agent-gate-compose-'));
  // nginx started as root runs its workers as nobody: they must reach the rendered DIR/temp.
  chmodSync(work, 0o711);
  for (const name of Object.keys(compose.volumes ?? {})) volumeDirs[name] = join(work, name);
  const first = await runPkiInit();
  if (first.status !== 0) throw new Error(`pki-init.sh failed (${first.status}): ${first.stderr}`);
  runs.push({ stderr: first.stderr, files: snapshot() });
  // The second run is what every later `docker compose up` does. It also renders the nginx
  // configuration the loopback stack below runs (same script, nginx pointed at loopback).
  e2eNginxDir = join(work, 'nginx-e2e');
  e2eNginxPort = await freePort();
  e2eGatePorts = [await freePort(), await freePort()];
  const second = await runPkiInit({
    NGINX_DIR: e2eNginxDir,
    NGINX_LISTEN: `127.0.0.1:${e2eNginxPort}`,
    NGINX_GATE_URL: `https://127.0.0.1:${e2eGatePorts[0]}`,
    // The authorizer profile's nginx, pointed at loopback too, so that `nginx -t` can resolve it.
    NGINX_AUTHZ_LISTEN: `127.0.0.1:${await freePort()}`,
    NGINX_AUTHZ_GATE_URL: `https://127.0.0.1:${e2eGatePorts[1]}`,
    NGINX_AUTHZ_UPSTREAM_URL: `http://127.0.0.1:${await freePort()}`,
  });
  if (second.status !== 0) throw new Error(`pki-init.sh (second run) failed (${second.status}): ${second.stderr}`);
  runs.push({ stderr: second.stderr, files: snapshot() });
}, 240_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

// =============================================================================================

describe('docker-compose.yml: parsing and schema', () => {
  it('parses the same under YAML 1.1 (docker-compose v1) and 1.2 (compose v2)', () => {
    const diff = firstDifference(parseYaml(composeText, '1.1'), raw, '');
    expect(diff, 'a value that YAML 1.1 reads differently (quote it)').toBeUndefined();
    // `version` is obsolete in the compose spec; a top-level `name` is refused by docker-compose v1.
    expect(Object.keys(raw).sort()).toEqual(['networks', 'services', 'volumes']);
  });

  it('refuses to start without REDIS_PASSWORD or FWD_HMAC_SECRET', () => {
    expect(() => interpolateAll(raw, { FWD_HMAC_SECRET })).toThrow(/REDIS_PASSWORD/);
    expect(() => interpolateAll(raw, { REDIS_PASSWORD })).toThrow(/FWD_HMAC_SECRET/);
  });

  it('passes `docker-compose config -q` (Debian docker-compose v1) when it is installed', async (ctx) => {
    if (!commandExists('docker-compose')) {
      process.stderr.write('compose.test: docker-compose not on PATH (Debian package docker-compose): compose schema check by docker-compose skipped (dclint still runs)\n');
      ctx.skip();
    }
    const env = cleanEnv(BASE_ENV);
    const ok = await runAsync('docker-compose', ['--project-directory', root, '-f', COMPOSE_FILE, 'config', '-q'], { env });
    expect(ok.stderr).not.toMatch(/is not set|WARNING|invalid/i);
    expect(ok.status, ok.stderr).toBe(0);
    const all = await runAsync('docker-compose', ['--project-directory', root, '-f', COMPOSE_FILE, '--profile', 'load', 'config', '--services'], { env });
    expect(all.status, all.stderr).toBe(0);
    expect(all.stdout.trim().split('\n').sort()).toEqual(EXPECTED_SERVICES);
    // Negative controls: an unknown key, and a dependency on a service that does not exist.
    const badKey = join(work, 'compose-bad-key.yml');
    writeFileSync(badKey, composeText.replace('    stop_grace_period: 20s', '    stop_grace_periods: 20s'));
    const r1 = await runAsync('docker-compose', ['--project-directory', root, '-f', badKey, 'config', '-q'], { env });
    expect(r1.status).not.toBe(0);
    expect(r1.stderr).toMatch(/stop_grace_periods/);
    const badDep = join(work, 'compose-bad-dep.yml');
    writeFileSync(badDep, composeText.replace(/^ {6}redis:\n {8}condition: service_healthy$/m, '      rediz:\n        condition: service_healthy'));
    const r2 = await runAsync('docker-compose', ['--project-directory', root, '-f', badDep, 'config', '-q'], { env });
    expect(r2.status).not.toBe(0);
    expect(r2.stderr).toMatch(/rediz/);
  }, 60_000);

  it('passes dclint (compose-spec schema and the rules of deploy/compose/dclint.json), which does catch a bad key', async () => {
    const dclint = join(root, 'node_modules/dclint/bin/dclint.cjs');
    expect(existsSync(dclint), 'dclint is a devDependency: npm ci').toBe(true);
    const lint = async (file: string) => {
      const r = await runAsync(process.execPath, [dclint, '-c', join(root, 'deploy/compose/dclint.json'), '-f', 'json', '--color', 'false', file]);
      const json = r.stdout.slice(r.stdout.indexOf('['));
      return { status: r.status, report: JSON.parse(json) as { errorCount: number; warningCount: number; messages: { rule: string; message: string }[] }[] };
    };
    const good = await lint(COMPOSE_FILE);
    expect(good.report[0]!.messages, JSON.stringify(good.report[0]!.messages, null, 2)).toEqual([]);
    expect(good.status).toBe(0);
    const badFile = join(work, 'compose-bad-type.yml');
    writeFileSync(badFile, composeText.replace('  gate2:\n', '  gate2:\n    read_only: [true]\n').replace(/(\n {2}gate2:\n(?: {4}.*\n)*?) {4}read_only: true\n/, '$1'));
    const bad = await lint(badFile);
    expect(bad.report[0]!.messages.map((m) => m.rule)).toContain('invalid-schema');
    expect(bad.status).not.toBe(0);
  }, 60_000);
});

describe('docker-compose.yml: services and wiring', () => {
  it('has exactly the stack: redis, two gates, nginx, the upstream, pki-init, ocsp, and k6 under the load profile', () => {
    expect(Object.keys(services).sort()).toEqual(EXPECTED_SERVICES);
    expect(services['k6']!.profiles).toEqual(['load']);
    for (const name of AUTHZ_SERVICES) expect(services[name]!.profiles, name).toEqual(['authorizer']);
    for (const [name, s] of Object.entries(services)) if (name !== 'k6' && !AUTHZ_SERVICES.includes(name)) expect(s.profiles, `${name} starts with a plain \`up\``).toBeUndefined();
    // One image for every agent-gate service, built from this repository's Dockerfile.
    expect(agentGateServices.sort()).toEqual(['gate-authz', 'gate1', 'gate2', 'ocsp', 'pki-init', 'upstream']);
    for (const name of agentGateServices) expect(services[name]!.build, name).toEqual({ context: '.', dockerfile: 'Dockerfile' });
    // Third-party images pinned to a version, never latest.
    for (const name of ['redis', 'nginx', 'nginx-authz', 'k6']) expect(services[name]!.image, name).toMatch(/^[a-z0-9./-]+:[0-9][\w.-]*$/);
    // load/README.md: k6 v1.3.
    expect(services['k6']!.image).toMatch(/^grafana\/k6:1\.3\./);
  });

  it('orders start-up with depends_on: every target exists, no cycle, health where health is awaited', () => {
    const conditions = ['service_started', 'service_healthy', 'service_completed_successfully'];
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, cond] of Object.entries(dependsOn(s))) {
        expect(Object.keys(services), `${name} depends on ${dep}`).toContain(dep);
        expect(conditions, `${name} -> ${dep}`).toContain(cond);
        if (cond === 'service_healthy') {
          const target = services[dep]!;
          const own = target.healthcheck;
          // An agent-gate service without its own healthcheck has the image's HEALTHCHECK.
          const hasCheck = own ? own.disable !== true && Array.isArray(own.test) : target.image === AGENT_GATE_IMAGE;
          expect(hasCheck, `${name} waits for ${dep} to be healthy, which has no healthcheck`).toBe(true);
        }
        if (cond === 'service_completed_successfully') expect(services[dep]!.restart, `${dep} is one-shot`).toBe('no');
      }
    }
    const seen = new Set<string>();
    const visit = (n: string, stack: string[]): void => {
      if (stack.includes(n)) throw new Error(`depends_on cycle: ${[...stack, n].join(' -> ')}`);
      if (seen.has(n)) return;
      for (const d of Object.keys(dependsOn(services[n]!))) visit(d, [...stack, n]);
      seen.add(n);
    };
    for (const n of Object.keys(services)) visit(n, []);

    for (const gate of GATES) {
      const deps = dependsOn(services[gate]!);
      expect(deps['redis'], gate).toBe('service_healthy');
      expect(deps['pki-init'], gate).toBe('service_completed_successfully');
      expect(deps['ocsp'], gate).toBe('service_healthy');
    }
    expect(dependsOn(services['nginx']!)).toMatchObject({ gate1: 'service_healthy', gate2: 'service_healthy', 'pki-init': 'service_completed_successfully' });
    expect(dependsOn(services['ocsp']!)['pki-init']).toBe('service_completed_successfully');
    expect(dependsOn(services['k6']!)['nginx']).toBe('service_healthy');
    // The image's HEALTHCHECK probes a gate: the other agent-gate services replace or disable it.
    expect(services['pki-init']!.healthcheck).toEqual({ disable: true });
    for (const name of ['ocsp', 'upstream']) expect(services[name]!.healthcheck?.test?.[0], name).toBe('CMD');
    for (const gate of GATES) expect(services[gate]!.healthcheck, `${gate} keeps the image's HEALTHCHECK`).toBeUndefined();
  });

  it('runs Redis with a required password, persistence off and noeviction', () => {
    const redis = services['redis']!;
    const cmd = redis.command as string[];
    expect(cmd[0]).toBe('redis-server');
    // The password comes from REDIS_PASSWORD (required), never a literal in the file.
    const rawCmd = raw.services.redis.command as string[];
    expect(rawCmd[rawCmd.indexOf('--requirepass') + 1]).toMatch(/^\$\{REDIS_PASSWORD:\?[^}]+\}$/);
    expect(argAfter(cmd, '--requirepass')).toBe(REDIS_PASSWORD);
    // Persistence off: no RDB snapshots, no AOF.
    expect(argAfter(cmd, '--save')).toBe('');
    expect(argAfter(cmd, '--appendonly')).toBe('no');
    // A full Redis refuses writes rather than evicting replay records.
    expect(argAfter(cmd, '--maxmemory-policy')).toBe('noeviction');
    // The healthcheck authenticates through REDISCLI_AUTH (not -a on the command line).
    expect(redis.healthcheck.test.join(' ')).toMatch(/REDISCLI_AUTH="\$REDIS_PASSWORD" redis-cli ping/);
    expect(envOf(redis)['REDIS_PASSWORD']).toBe(REDIS_PASSWORD);
    expect(redis.ports, 'Redis is not published').toBeUndefined();
    expect(Object.keys(networksOf(redis))).toEqual(['backend']);
    expect(redis.tmpfs).toContain('/data');
    // Both gates use that password and that service.
    for (const gate of GATES) {
      const url = new URL(envOf(services[gate]!)['GATE_REDIS_URL']!);
      expect(url.protocol).toBe('redis:');
      expect(decodeURIComponent(url.password)).toBe(REDIS_PASSWORD);
      expect(url.hostname).toBe('redis');
      expect(url.port).toBe('6379');
    }
  });

  it('gives both gates one configuration, every GATE_* name one the gate knows', () => {
    const [a, b] = GATES.map((g) => services[g]!);
    for (const key of new Set([...Object.keys(a!), ...Object.keys(b!)])) {
      if (key === 'networks') continue;
      expect(b![key], `gate2.${key} differs from gate1's`).toEqual(a![key]);
    }
    const [na, nb] = [networksOf(a!)['backend']!, networksOf(b!)['backend']!];
    expect(na.aliases).toEqual(['gate']);
    expect(nb.aliases).toEqual(['gate']);
    expect(na.ipv4_address).not.toBe(nb.ipv4_address);

    const known = new Set(Object.keys(envSchema.shape));
    for (const gate of ALL_GATES) for (const k of Object.keys(envOf(services[gate]!))) expect(known.has(k), `${gate}: ${k} is not a variable the gate knows`).toBe(true);
    // Every GATE_* name written anywhere (interpolation defaults, comments, the PKI script) too.
    const texts = { 'docker-compose.yml': composeText, 'pki-init.sh': readFileSync(PKI_INIT, 'utf8'), 'deploy/compose/README.md': readFileSync(join(root, 'deploy/compose/README.md'), 'utf8') };
    for (const [file, text] of Object.entries(texts)) {
      // `GATE_RATE_*` and the like are wildcards, not names.
      for (const m of text.matchAll(/\bGATE_[A-Z0-9_]+(?!\*)\b/g)) expect(known.has(m[0]), `${file}: ${m[0]} is not a variable the gate knows`).toBe(true);
    }
    // No other service gets GATE_* variables (the CLI's other commands do not read them).
    for (const [name, s] of Object.entries(services)) {
      if (ALL_GATES.includes(name as never)) continue;
      expect(Object.keys(envOf(s)).filter((k) => k.startsWith('GATE_')), name).toEqual([]);
    }
  });

  it('runs the gates in staging, and the gate\'s own loadConfig finds no violation (default and overridden variables)', () => {
    const env = envOf(services['gate1']!);
    expect(env).toMatchObject({ GATE_ENV: 'staging', GATE_MODE: 'forwarded', GATE_STORE: 'redis', GATE_REVOCATION: 'ocsp,crl', GATE_REVOCATION_FAIL: 'closed', GATE_POW: 'off' });
    const { config, violations } = loadConfig(env);
    expect(violations).toEqual([]);
    expect(config!.env).toBe('staging');
    expect(config!.revocation.crlFiles).toEqual(['/var/lib/agent-gate/pki/ca.crl']);
    expect(config!.adminListen.host).toBe('127.0.0.1');
    // With every optional variable the file reads overridden, as a load test would.
    const overridden = interpolateAll(raw, {
      ...BASE_ENV,
      AG_BACKEND_NET: '10.99.3',
      GATE_RATE_CHALLENGE_IP: '6000/60',
      GATE_RATE_CHALLENGE_IDENTITY: '6000/60',
      GATE_RATE_TOKEN_IDENTITY: '6000/60',
      GATE_RATE_PROXY_IDENTITY: '5000/1',
      GATE_RATE_FAILED_PROOFS: '50/60',
      GATE_LOG_LEVEL: 'warn',
    }) as Obj;
    const env2 = envOf(overridden.services.gate1);
    expect(loadConfig(env2).violations).toEqual([]);
    expect(env2['GATE_FWD_TRUSTED_PROXIES']).toBe('10.99.3.10/32');
    expect(overridden.networks.backend.ipam.config[0].subnet).toBe('10.99.3.0/24');
    expect(networksOf(overridden.services.nginx)['backend']!.ipv4_address).toBe('10.99.3.10');
  });

  it('wires names, ports and addresses consistently across services', () => {
    const gateEnv = envOf(services['gate1']!);
    const init = envOf(services['pki-init']!);
    const nginx = services['nginx']!;
    const backend = compose.networks.backend;
    const subnet = backend.ipam.config[0].subnet as string;
    const ipRange = backend.ipam.config[0].ip_range as string;
    const inCidr = (ip: string, cidr: string): boolean => {
      const [net, bits] = cidr.split('/') as [string, string];
      const n = (a: string) => a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
      const mask = 2 ** 32 - 2 ** (32 - Number(bits));
      return (n(ip) & mask) >>> 0 === (n(net) & mask) >>> 0;
    };
    // Only nginx reaches the gates: its fixed address is the one trusted proxy.
    const nginxIp = networksOf(nginx)['backend']!.ipv4_address as string;
    expect(gateEnv['GATE_FWD_TRUSTED_PROXIES']).toBe(`${nginxIp}/32`);
    for (const ip of [nginxIp, ...GATES.map((g) => networksOf(services[g]!)['backend']!.ipv4_address as string)]) {
      expect(inCidr(ip, subnet), `${ip} in ${subnet}`).toBe(true);
      expect(inCidr(ip, ipRange), `${ip} outside the dynamic range ${ipRange}`).toBe(false);
    }
    expect(backend.internal, 'the backend has no route out, agents cannot reach a gate directly').toBe(true);
    for (const gate of GATES) expect(Object.keys(networksOf(services[gate]!)), gate).toEqual(['backend']);
    expect(Object.keys(networksOf(nginx)).sort()).toEqual(['backend', 'edge']);
    expect(Object.keys(networksOf(services['k6']!))).toEqual(['edge']);
    expect(services['pki-init']!.network_mode).toBe('none');

    // nginx -> gates: the URL pki-init renders names the alias both gates carry, on GATE_LISTEN's port,
    // over TLS verified against the name, which the gates' certificate covers.
    const gateUrl = hostPortOf(init['NGINX_GATE_URL']!);
    expect(init['NGINX_GATE_URL']).toMatch(/^https:/);
    expect(gateUrl.host).toBe(init['NGINX_GATE_TLS_NAME']);
    for (const gate of GATES) expect(networksOf(services[gate]!)['backend']!.aliases).toContain(gateUrl.host);
    expect(gateEnv['GATE_LISTEN']).toBe(`0.0.0.0:${gateUrl.port}`);
    expect(init['CERT_NAMES_GATE']!.split(',')).toEqual(expect.arrayContaining(['gate', 'gate1', 'gate2']));
    expect(init['PATH_PREFIX']).toBe(gateEnv['GATE_PATH_PREFIX']);
    // The forwarded-header key: same secret variable, same kid.
    const rawGateEnv = raw.services.gate1.environment;
    expect(rawGateEnv.GATE_FWD_HMAC_KEYS).toMatch(/^compose-1:\$\{FWD_HMAC_SECRET:\?[^}]+\}$/);
    expect(raw.services['pki-init'].environment.FWD_HMAC_SECRET).toMatch(/^\$\{FWD_HMAC_SECRET:\?[^}]+\}$/);
    expect(gateEnv['GATE_FWD_HMAC_KEYS']).toBe(`${init['FWD_HMAC_KID']}:${FWD_HMAC_SECRET}`);

    // nginx listens where pki-init renders it to, publishes that port on loopback only, and is
    // the only published service.
    const listenPort = init['NGINX_LISTEN']!.split(':').at(-1);
    expect(nginx.ports).toEqual([`127.0.0.1:8443:${listenPort}`]);
    for (const [name, s] of Object.entries(services)) if (name !== 'nginx' && name !== 'nginx-authz') expect(s.ports, `${name} publishes nothing`).toBeUndefined();
    const nginxCmd = nginx.command as string[];
    expect(nginx.entrypoint).toEqual(['nginx']);
    const prefix = argAfter(nginxCmd, '-p')!;
    expect(argAfter(nginxCmd, '-c')).toBe(`${prefix}/nginx.conf`);
    expect(argAfter(nginxCmd, '-g')).toMatch(/daemon off;/);
    expect(argAfter(nginxCmd, '-g')).toMatch(new RegExp(`pid ${prefix}/nginx\\.pid;`));
    // The renderer writes absolute paths: nginx must see every volume where pki-init wrote it.
    for (const m of mountsOf(nginx)) {
      const initMount = mountsOf(services['pki-init']!).find((x) => x.source === m.source);
      expect(initMount?.target, `volume ${m.source}`).toBe(m.target);
    }
    expect(hostPath('nginx', prefix)).toBe(hostPath('pki-init', prefix));
    expect(mountsOf(nginx).find((m) => m.target === prefix)!.readOnly, 'nginx writes temp files and logs under its prefix').toBe(false);
    // nginx's healthcheck goes through its own TLS to a gate's health path.
    expect(nginx.healthcheck.test.join(' ')).toContain(`https://localhost:${listenPort}${gateEnv['GATE_PATH_PREFIX']}/healthz`);

    // The gates' upstream and the OCSP responder are the services of those names, on their ports.
    const up = hostPortOf(gateEnv['GATE_UPSTREAM_URL']!);
    expect(up.host).toBe('upstream');
    expect(argAfter(services['upstream']!.command, '--listen')).toBe(`0.0.0.0:${up.port}`);
    const ocsp = hostPortOf(init['OCSP_URL']!);
    expect(ocsp.host).toBe('ocsp');
    expect(services['ocsp']!.command.slice(0, 2)).toEqual(['pki', 'ocsp-responder']);
    expect(argAfter(services['ocsp']!.command, '--port')).toBe(String(ocsp.port));
    expect(argAfter(services['ocsp']!.command, '--host')).toBe('0.0.0.0');
    expect(argAfter(services['ocsp']!.command, '--dir')).toBe('/var/lib/agent-gate/pki');
    expect(services['upstream']!.command[0]).toBe('demo-upstream');
    for (const gate of GATES) expect(services[gate]!.command).toEqual(['serve']);
    expect(services['pki-init']!.entrypoint).toEqual(['/bin/sh', '/app/deploy/compose/pki-init.sh']);
    // Gates drain for GATE_DRAIN_TIMEOUT_MS after SIGTERM: the stop grace period must be longer.
    for (const gate of GATES) expect(Number.parseInt(services[gate]!.stop_grace_period, 10) * 1000).toBeGreaterThan(Number(gateEnv['GATE_DRAIN_TIMEOUT_MS']));
  });

  it('mounts what each service reads, read-only except where it writes', () => {
    const gateEnv = envOf(services['gate1']!);
    const files = ['GATE_TLS_CERT', 'GATE_TLS_KEY', 'GATE_CLIENT_CA', 'GATE_SIGNING_KEY_FILE', 'GATE_CRL_FILES'];
    for (const gate of ALL_GATES) {
      for (const m of mountsOf(services[gate]!)) expect(m.readOnly, `${gate}: ${m.target}`).toBe(true);
      for (const k of files) expect(() => hostPath(gate, gateEnv[k]!), `${gate}: ${k}`).not.toThrow();
    }
    for (const m of mountsOf(services['ocsp']!)) expect(m.readOnly, `ocsp: ${m.target}`).toBe(true);
    for (const m of mountsOf(services['pki-init']!)) expect(m.readOnly, `pki-init writes ${m.target}`).toBe(false);
    // Every named volume is declared, every declared one used.
    const used = new Set(Object.values(services).flatMap((s) => mountsOf(s).filter((m) => m.named).map((m) => m.source)));
    expect([...used].sort()).toEqual(Object.keys(compose.volumes).sort());
    // The volumes' mount points are the ones the image creates for uid 1000 (Dockerfile).
    for (const m of mountsOf(services['pki-init']!)) expect(dockerfileText).toContain(m.target);
  });

  it('points k6 at nginx with the CA, a P-256 agent and only variables the scripts read', () => {
    const k6 = services['k6']!;
    const env = envOf(k6);
    expect(env['SSL_CERT_FILE']).toBe(env['K6_CA_CERT']);
    const target = hostPortOf(env['K6_GATE_URL']!);
    expect(target.host).toBe('nginx');
    expect(envOf(services['pki-init']!)['CERT_NAMES_NGINX']!.split(',')).toContain('nginx');
    expect(String(target.port)).toBe(envOf(services['pki-init']!)['NGINX_LISTEN']!.split(':').at(-1));
    const agent = /\/agents\/([^/]+)\.crt$/.exec(env['K6_AGENT_CERT']!)?.[1];
    expect(envOf(services['pki-init']!)['AGENTS']!.split(' ')).toContain(agent);
    expect(env['K6_AGENT_KEY']).toBe(env['K6_AGENT_CERT']!.replace(/\.crt$/, '.key'));
    for (const k of ['SSL_CERT_FILE', 'K6_AGENT_CERT', 'K6_AGENT_KEY']) expect(() => hostPath('k6', env[k]!), k).not.toThrow();
    // The scripts exist where the command names them.
    const scriptsMount = mountsOf(k6).find((m) => !m.named)!;
    expect(scriptsMount.readOnly).toBe(true);
    const script = (k6.command as string[]).at(-1)!;
    expect(k6.command[0]).toBe('run');
    expect(existsSync(join(root, scriptsMount.source, relative(scriptsMount.target, script)))).toBe(true);
    // Only K6_* names the scripts read (k6's own option variables would change the run).
    const used = new Set<string>();
    for (const f of gitFiles('load/k6').filter((p) => p.endsWith('.js'))) for (const m of readFileSync(join(root, f), 'utf8').matchAll(/['"](K6_[A-Z0-9_]+)['"]/g)) used.add(m[1]!);
    for (const k of Object.keys(env).filter((n) => n.startsWith('K6_'))) expect(used.has(k), `k6: ${k} is read by no script in load/k6`).toBe(true);
    // Gentle by default: inside the gates' default per-identity limits (60/60 = 1 flow/s).
    expect(Number(env['K6_RATE'])).toBeLessThanOrEqual(1);
  });

  it('hardens every service: non-root uid 1000, read-only root, no capabilities, no new privileges', () => {
    for (const [name, s] of Object.entries(services)) {
      expect(s.read_only, `${name}: read_only`).toBe(true);
      expect(s.security_opt, `${name}: no-new-privileges`).toContain('no-new-privileges:true');
      // Redis' image starts as root to drop to its own user (gosu), which needs capabilities.
      if (name === 'redis') continue;
      expect(s.user, `${name}: user`).toBe('1000:1000');
      expect(s.cap_drop, `${name}: cap_drop`).toEqual(['ALL']);
      expect(s.cap_add, `${name}: cap_add`).toBeUndefined();
      expect(s.privileged, `${name}: privileged`).toBeUndefined();
    }
  });
});

// =============================================================================================

describe('docker-compose.yml: the authorizer profile (PROTOCOL.md section 13)', () => {
  const gateIp = (name: string) => networksOf(services[name]!)['backend']!.ipv4_address as string;

  it("runs gate-authz in staging authorizer mode: the gate's own loadConfig finds no violation, no upstream, nginx-authz the one trusted proxy", () => {
    const env = envOf(services['gate-authz']!);
    expect(env).toMatchObject({ GATE_ENV: 'staging', GATE_MODE: 'authorizer', GATE_STORE: 'redis', GATE_REVOCATION_FAIL: 'closed' });
    expect(env['GATE_UPSTREAM_URL'], 'nginx proxies; the authorizer gate proxies nothing').toBeUndefined();
    const { config, violations } = loadConfig(env);
    expect(violations).toEqual([]);
    expect(config!.mode).toBe('authorizer');
    expect(config!.authorizer.cacheS).toBe(2);
    expect(env['GATE_FWD_TRUSTED_PROXIES']).toBe(`${gateIp('nginx-authz')}/32`);
    // Same store, signing key, CA, HMAC key and limits as the forwarded gates: one deployment.
    const g1 = envOf(services['gate1']!);
    for (const k of Object.keys(g1).filter((n) => !['GATE_MODE', 'GATE_UPSTREAM_URL', 'GATE_FWD_TRUSTED_PROXIES'].includes(n))) expect(env[k], k).toBe(g1[k]);
    // With the cache and the proxy limit overridden, as an operator would.
    const overridden = interpolateAll(raw, { ...BASE_ENV, GATE_AUTHZ_CACHE_S: '0', GATE_RATE_PROXY_IDENTITY: '50/1' }) as Obj;
    const env2 = envOf(overridden.services['gate-authz']);
    expect(loadConfig(env2).violations).toEqual([]);
    expect(loadConfig(env2).config!.authorizer.cacheS).toBe(0);
    // pki-init renders nginx from the same variables.
    expect(envOf(overridden.services['pki-init'])).toMatchObject({ AUTHZ_CACHE_S: '0', AUTHZ_RATE_PROXY_IDENTITY: '50/1' });
    expect(envOf(services['pki-init']!)).toMatchObject({ AUTHZ_CACHE_S: '2', AUTHZ_RATE_PROXY_IDENTITY: envOf(services['gate1']!)['GATE_RATE_PROXY_IDENTITY'] });
  });

  it('wires nginx-authz to gate-authz and the upstream, on addresses and names the PKI and networks carry', () => {
    const init = envOf(services['pki-init']!);
    const env = envOf(services['gate-authz']!);
    const subnet = compose.networks.backend.ipam.config[0].subnet as string;
    const taken = [...GATES, 'nginx', 'gate-authz', 'nginx-authz'].map(gateIp);
    expect(new Set(taken).size, 'fixed addresses are distinct').toBe(taken.length);
    for (const ip of [gateIp('gate-authz'), gateIp('nginx-authz')]) expect(ip.startsWith(subnet.split('.0/')[0]!)).toBe(true);
    const gateUrl = hostPortOf(init['NGINX_AUTHZ_GATE_URL']!);
    expect(init['NGINX_AUTHZ_GATE_URL']).toMatch(/^https:/);
    expect(gateUrl.host).toBe('gate-authz');
    expect(init['CERT_NAMES_GATE']!.split(',')).toContain('gate-authz');
    // k6 (edge network) reaches it by its service name, which nginx's certificate carries.
    expect(init['CERT_NAMES_NGINX']!.split(',')).toContain('nginx-authz');
    expect(env['GATE_LISTEN']).toBe(`0.0.0.0:${gateUrl.port}`);
    expect(env['GATE_TLS_CERT']).toBe('/var/lib/agent-gate/pki/gate.crt');
    const up = hostPortOf(init['NGINX_AUTHZ_UPSTREAM_URL']!);
    expect(up.host).toBe('upstream');
    expect(argAfter(services['upstream']!.command, '--listen')).toBe(`0.0.0.0:${up.port}`);
    const nginx = services['nginx-authz']!;
    expect(dependsOn(nginx)).toMatchObject({ 'gate-authz': 'service_healthy', upstream: 'service_healthy', 'pki-init': 'service_completed_successfully' });
    expect(Object.keys(networksOf(nginx)).sort()).toEqual(['backend', 'edge']);
    expect(Object.keys(networksOf(services['gate-authz']!))).toEqual(['backend']);
    // Published on loopback only, on its own port; listening where pki-init renders it.
    const listenPort = (init['NGINX_AUTHZ_LISTEN'] ?? init['NGINX_LISTEN']!).split(':').at(-1);
    expect(nginx.ports).toEqual([`127.0.0.1:8444:${listenPort}`]);
    // Its prefix is the directory pki-init renders the authorizer configuration into.
    const cmd = nginx.command as string[];
    const prefix = argAfter(cmd, '-p')!;
    expect(prefix).toBe('/var/lib/agent-gate/nginx/authorizer');
    expect(argAfter(cmd, '-c')).toBe(`${prefix}/nginx.conf`);
    expect(argAfter(cmd, '-g')).toMatch(new RegExp(`pid ${prefix}/nginx\\.pid;`));
    expect(hostPath('nginx-authz', prefix)).toBe(hostPath('pki-init', prefix));
    expect(mountsOf(nginx).find((m) => m.target === '/var/lib/agent-gate/nginx')!.readOnly).toBe(false);
    expect(nginx.healthcheck.test.join(' ')).toContain(`https://localhost:${listenPort}${env['GATE_PATH_PREFIX']}/healthz`);
  });

  it('pki-init renders the authorizer nginx configuration: auth_request to gate-authz, proxy to the upstream, the cache and edge limit of the gates\' variables', () => {
    const dir = hostPath('pki-init', '/var/lib/agent-gate/nginx/authorizer');
    const conf = readFileSync(join(dir, 'nginx.conf'), 'utf8');
    expect(conf).toContain('auth_request /./agent-gate-authorize;');
    expect(conf).toMatch(/upstream agent_gate \{\s*server gate-authz:8443;/);
    expect(conf).toMatch(/upstream agent_gate_upstream \{\s*server upstream:8080;/);
    expect(conf).toContain('proxy_ssl_name gate;');
    expect(conf).toContain('proxy_ssl_verify on;');
    expect(conf).toContain(`proxy_cache_path "${dir}/temp/authz_cache"`);
    expect(conf).toContain(`proxy_pass https://agent_gate/.agent-gate/v1/authorize;`);
    expect(conf).toContain('"proxy_identity";q=1000;w=1');
    expect(conf).toContain('if ($agent_gate_bad_headers)');
    expect(existsSync(join(dir, 'gate_sign.js'))).toBe(true);
    expect(statSync(join(dir, 'gate_fwd_key.json')).mode & 0o077).toBe(0);
    expect(runs[0]!.stderr).toMatch(/7\/7 authorizer nginx configuration/);
    expect(runs[0]!.stderr, 'no renderer warning').not.toMatch(/warning|not verified/i);
  });

  it('the rendered authorizer configuration passes `nginx -t` (pointed at loopback)', () => {
    ensureNginx();
    const r = nginxTest(join(e2eNginxDir, 'authorizer'));
    expect(r.ok, r.output).toBe(true);
  });
});

describe('Dockerfile and .dockerignore', () => {
  it('builds in two stages: dist/ in a build stage, production dependencies only in the runtime stage', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.name, `FROM ${s.from} has a stage name`).not.toBe('');
    const build = stages.find((s) => of(s, 'RUN').some((r) => /npm run build/.test(r.args)));
    expect(build, 'a stage runs npm run build').toBeDefined();
    expect(build).not.toBe(finalStage);
    expect(of(build!, 'RUN').some((r) => /\bnpm ci\b/.test(r.args))).toBe(true);
    const finalRuns = of(finalStage, 'RUN').map((r) => r.args);
    expect(finalRuns.some((r) => /\bnpm ci\b[^&]*--omit=dev/.test(r)), 'runtime stage: npm ci --omit=dev').toBe(true);
    expect(finalRuns.some((r) => /npm run build|npm ci(?![^&]*--omit=dev)/.test(r)), 'no dev dependencies in the runtime stage').toBe(false);
    expect(of(finalStage, 'COPY').some((c) => new RegExp(`--from=${build!.name}\\b.*/dist\\b`).test(c.args))).toBe(true);
    // Node from the same major the project supports (package.json engines).
    const nodeImage = instructions.find((i) => i.keyword === 'ARG' && i.args.startsWith('NODE_IMAGE='))?.args.split('=')[1];
    const engines = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
    expect(nodeImage).toMatch(new RegExp(`^node:${/(\d+)/.exec(engines)![1]}\\b`));
  });

  it('runs agent-gate serve as uid 1000 with a HEALTHCHECK on the admin /healthz', () => {
    const users = of(finalStage, 'USER').map((u) => u.args);
    expect(users.at(-1)).toMatch(/^(1000(:1000)?|node)$/);
    // deploy/k8s runs the image as that uid.
    expect(readFileSync(join(root, 'deploy/k8s/deployment.yaml'), 'utf8')).toMatch(/runAsUser: 1000\b/);
    expect(execForm(of(finalStage, 'ENTRYPOINT').at(-1)!.args)).toEqual(['agent-gate']);
    expect(execForm(of(finalStage, 'CMD').at(-1)!.args)).toEqual(['serve']);
    // `agent-gate` is package.json's bin, linked onto PATH from the WORKDIR.
    const workdir = of(finalStage, 'WORKDIR').at(-1)!.args;
    const bin = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin['agent-gate']!;
    expect(finalStage.body.some((i) => i.keyword === 'RUN' && i.args.includes(`ln -s ${posix.join(workdir, bin)} /usr/local/bin/agent-gate`))).toBe(true);
    expect(stages.some((s) => of(s, 'RUN').some((r) => new RegExp(`chmod 0?755 ${bin.replace(/\./g, '\\.')}`).test(r.args)))).toBe(true);
    // HEALTHCHECK: exec form, node running the probe script the image copies in.
    const hc = of(finalStage, 'HEALTHCHECK').at(-1)!.args;
    const cmd = execForm(hc.slice(hc.indexOf('CMD') + 3).trim());
    expect(cmd[0]).toBe('node');
    const copied = contextCopies().find((c) => c.sources.includes('deploy/compose/healthcheck.mjs'));
    expect(copied).toBeDefined();
    expect(cmd[1]).toBe(posix.join(workdir, copied!.dest, 'healthcheck.mjs'));
    // The listeners' default ports are exposed.
    const defaults = envSchema.parse({});
    const exposed = of(finalStage, 'EXPOSE').flatMap((e) => e.args.split(' '));
    expect(exposed).toEqual(expect.arrayContaining([String(defaults.GATE_LISTEN.port), String(defaults.GATE_ADMIN_LISTEN.port)]));
    // The compose PKI service runs the script from where the image has it.
    expect(posix.join(workdir, copied!.dest, 'pki-init.sh')).toBe(services['pki-init']!.entrypoint[1]);
  });

  it('copies no secrets, bakes in no configuration, and copies only what .dockerignore lets through', () => {
    const copies = contextCopies();
    for (const c of copies) {
      for (const src of c.sources) {
        expect(existsSync(join(root, src)), `COPY ${src}: exists`).toBe(true);
        expect(src, 'never the whole context').not.toMatch(/^\.\/?$/);
        expect(src).not.toMatch(/(^|\/)(pki|\.tmp|\.env)(\/|$)|\.(key|pem|p12|jwk)$/);
        for (const f of gitFiles(src)) expect(dockerIgnored(f), `${f} is needed by COPY ${src} but .dockerignore excludes it`).toBe(false);
      }
    }
    expect(instructions.filter((i) => i.keyword === 'ADD'), 'COPY, not ADD').toEqual([]);
    for (const i of instructions.filter((x) => x.keyword === 'ENV' || x.keyword === 'ARG')) {
      expect(i.args, 'no secrets in ENV/ARG').not.toMatch(/SECRET|PASSWORD|TOKEN|PRIVATE/i);
      expect(i.args, 'configuration comes from the environment at run time').not.toMatch(/\bGATE_/);
    }
  });

  it('sets OPENSSL_CONF to the deploy/node-openssl.cnf its runtime stage copies in, root-owned (one TLS 1.3 ticket per handshake: test/integration/tls-tickets.test.ts)', () => {
    const workdir = of(finalStage, 'WORKDIR').at(-1)!.args;
    // The runtime stage's own COPY from the context: a copy in the build stage never reaches the image.
    const copies = of(finalStage, 'COPY').filter((c) => !/--from=/.test(c.args) && c.args.split(' ').includes('deploy/node-openssl.cnf'));
    expect(copies, 'the runtime stage copies deploy/node-openssl.cnf').toHaveLength(1);
    // No --chown: the file stays root's, so the gate's user cannot rewrite a configuration that
    // could load shared objects into the gate.
    expect(copies[0]!.args).not.toMatch(/--chown/);
    const dest = copies[0]!.args.split(' ').at(-1)!;
    // The last assignment wins, also inside an ENV line of several KEY=VALUE pairs.
    const assigned = of(finalStage, 'ENV').flatMap((e) => [...e.args.matchAll(/(?:^|\s)OPENSSL_CONF=(\S+)/g)].map((m) => m[1]!));
    expect(assigned.at(-1)).toBe(posix.join(workdir, dest, 'node-openssl.cnf'));
  });

  it('.dockerignore keeps node_modules, dist, pki/, .tmp and secrets out of the build context, and src/pki in', () => {
    for (const p of ['node_modules/x/index.js', 'load/node_modules/y.js', 'dist/cli/main.js', 'pki/dev/ca.key', '.tmp/x', '.env', 'deploy/.env', 'some.key']) expect(dockerIgnored(p), p).toBe(true);
    for (const p of ['src/pki/index.ts', 'src/cli/main.ts', 'nginx/agent-gate.conf', 'package.json', 'package-lock.json', 'tsconfig.build.json', 'deploy/compose/pki-init.sh']) expect(dockerIgnored(p), p).toBe(false);
  });

  it('the HEALTHCHECK script answers 0 only for a 200 from the admin /healthz (and the public one behind an admin client CA)', async () => {
    const seen: string[] = [];
    let status = 200;
    const handler = (req: { url?: string }, res: { writeHead: (s: number) => { end: () => void } }) => {
      seen.push(req.url ?? '');
      res.writeHead(status).end();
    };
    const listen = (s: Server) => new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as { port: number }).port)));
    const http = createHttpServer(handler);
    const port = await listen(http);
    const probe = (env: Record<string, string>) => runAsync(process.execPath, [HEALTHCHECK], { env: cleanEnv(env), timeoutMs: 20_000 });
    try {
      expect((await probe({ GATE_ADMIN_LISTEN: `127.0.0.1:${port}` })).status).toBe(0);
      expect(seen.pop()).toBe('/healthz');
      status = 503;
      expect((await probe({ GATE_ADMIN_LISTEN: `0.0.0.0:${port}` })).status).toBe(1);
      expect(seen.pop()).toBe('/healthz');
      status = 200;
      // Admin HTTPS (own certificate, not verified: loopback, nothing secret sent).
      const pki = volumeDirs['pki']!;
      const tlsOpts = { cert: readFileSync(join(pki, 'gate.crt')), key: readFileSync(join(pki, 'gate.key')) };
      const https = createHttpsServer(tlsOpts, handler);
      const tport = await listen(https as unknown as Server);
      try {
        expect((await probe({ GATE_ADMIN_LISTEN: `127.0.0.1:${tport}`, GATE_ADMIN_TLS_CERT: 'x', GATE_ADMIN_TLS_KEY: 'y' })).status).toBe(0);
        expect(seen.pop()).toBe('/healthz');
        // An admin client CA makes the admin handshake impossible: the public P/healthz is asked.
        expect((await probe({ GATE_ADMIN_CLIENT_CA: 'x', GATE_LISTEN: `0.0.0.0:${tport}`, GATE_TLS_CERT: 'x', GATE_PATH_PREFIX: '/gw' })).status).toBe(0);
        expect(seen.pop()).toBe('/gw/healthz');
      } finally {
        https.close();
      }
    } finally {
      http.close();
    }
    const closed = await freePort();
    const dead = await probe({ GATE_ADMIN_LISTEN: `127.0.0.1:${closed}` });
    expect(dead.status).toBe(1);
    expect(dead.stderr).toMatch(/healthcheck: http:\/\/127\.0\.0\.1:\d+\/healthz/);
  }, 60_000);
});

// =============================================================================================

describe('deploy/compose/pki-init.sh', () => {
  it('writes the CA, the server certificates for the compose names, P-256 agents, a CRL, the signing key and the nginx configuration', () => {
    const pki = volumeDirs['pki']!;
    const ca = new X509Certificate(readFileSync(join(pki, 'ca.crt')));
    const sans = (f: string) => new X509Certificate(readFileSync(join(pki, f))).subjectAltName ?? '';
    const init = envOf(services['pki-init']!);
    for (const n of init['CERT_NAMES_GATE']!.split(',')) expect(sans('gate.crt')).toContain(n.includes('.') && /^\d/.test(n) ? `IP Address:${n}` : `DNS:${n}`);
    expect(sans('nginx.crt')).toContain('DNS:nginx');
    expect(sans('nginx.crt')).toContain('IP Address:127.0.0.1');
    for (const f of ['gate.crt', 'nginx.crt']) expect(new X509Certificate(readFileSync(join(pki, f))).checkIssued(ca), f).toBe(true);
    for (const agent of init['AGENTS']!.split(' ')) {
      const cert = new X509Certificate(readFileSync(join(pki, 'agents', `${agent}.crt`)));
      expect(cert.checkIssued(ca)).toBe(true);
      expect(cert.infoAccess, `${agent}: AIA names the ocsp service`).toContain(`OCSP - URI:${init['OCSP_URL']}`);
      const keyPem = readFileSync(join(pki, 'agents', `${agent}.key`), 'utf8');
      // k6 needs an unencrypted PKCS#8 P-256 key (load/README.md).
      expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
      expect(createPrivateKey(keyPem).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    }
    expect(readFileSync(join(pki, 'ca.crl'), 'utf8')).toMatch(/-----BEGIN X509 CRL-----/);
    for (const secret of [join(pki, 'ca.key'), join(pki, 'gate.key'), join(pki, 'nginx.key'), join(volumeDirs['secrets']!, 'signing.jwk')]) {
      expect(statSync(secret).mode & 0o077, `${secret} is private`).toBe(0);
    }
    const conf = readFileSync(join(volumeDirs['nginx-conf']!, 'nginx.conf'), 'utf8');
    const gateUrl = hostPortOf(init['NGINX_GATE_URL']!);
    expect(conf).toContain(`load_module ${NJS_MODULE_PATH};`);
    expect(conf).toContain(`server ${gateUrl.host}:${gateUrl.port};`);
    expect(conf).toContain(`proxy_ssl_name ${init['NGINX_GATE_TLS_NAME']};`);
    expect(conf).toContain('proxy_ssl_verify on;');
    expect(conf).toContain(`listen ${init['NGINX_LISTEN']} ssl;`);
    // Paths as the containers see them would differ from here: the script ran with host dirs.
    expect(conf).toContain(`ssl_certificate     "${join(volumeDirs['pki']!, 'nginx.crt')}";`);
    const key = JSON.parse(readFileSync(join(volumeDirs['nginx-conf']!, 'gate_fwd_key.json'), 'utf8')) as { kid: string; secret: string };
    expect(key).toEqual({ kid: init['FWD_HMAC_KID'], secret: FWD_HMAC_SECRET });
    expect(runs[0]!.stderr).not.toMatch(/warning/i);
  });

  it('keeps everything on a second run (every `docker compose up`), and refuses to run without the HMAC secret', async () => {
    const [a, b] = [runs[0]!.files, runs[1]!.files];
    for (const f of Object.keys(a).filter((p) => p.startsWith('pki/') || p.startsWith('secrets/'))) {
      // The CRL and its counter are re-issued on purpose (a fresh nextUpdate).
      if (/\/(ca\.crl|crlnumber|pki\.json)$/.test(f)) continue;
      expect(b[f], `${f} changed on the second run`).toBe(a[f]);
    }
    expect(runs[1]!.stderr).toMatch(/demo: current/);
    const r = await runAsync('sh', [PKI_INIT], { env: cleanEnv({ PKI_DIR: join(work, 'never') }) });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/FWD_HMAC_SECRET/);
    expect(existsSync(join(work, 'never'))).toBe(false);
  }, 60_000);

  it('gives the gates files their loader accepts (loadConfig + loadMaterials over the volumes)', async () => {
    for (const gate of GATES) {
      const env = gateEnvOnHost(gate);
      const { config, violations } = loadConfig(env);
      expect(violations).toEqual([]);
      const warnings: string[] = [];
      const m = await loadMaterials(config!, (l) => warnings.push(l));
      expect(m.keys.source).not.toBe('ephemeral');
      expect(m.tls).toBeDefined();
      expect(warnings).toEqual([]);
    }
  });

  it('the commands the compose services run exist in the CLI', async () => {
    const top = await runAsync(CLI[0]!, [...CLI.slice(1), '--help']);
    const pki = await runAsync(CLI[0]!, [...CLI.slice(1), 'pki', '--help']);
    const commands = [...top.stdout.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]);
    const pkiCommands = [...pki.stdout.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]);
    const script = readFileSync(PKI_INIT, 'utf8');
    const wanted = new Set<string>(['serve', services['upstream']!.command[0]]);
    for (const m of script.matchAll(/\$AGENT_GATE ([a-z-]+)(?: ([a-z-]+))?/g)) wanted.add(m[1] === 'pki' ? `pki ${m[2]}` : m[1]!);
    wanted.add(services['ocsp']!.command.slice(0, 2).join(' '));
    for (const w of wanted) {
      const [cmd, sub] = w.split(' ');
      if (sub) expect(pkiCommands, `agent-gate ${w}`).toContain(sub);
      else expect(commands, `agent-gate ${w} (src/cli/main.ts must register it)`).toContain(cmd);
    }
  }, 60_000);
});

// =============================================================================================

describe('the compose stack on loopback (nginx + njs, redis-server)', () => {
  const procs: ChildProcess[] = [];
  let nginx: RunningNginx | undefined;
  let unavailable = '';
  let ports: Record<string, number> = {};
  let gateEnvs: Record<string, string>[] = [];

  /** Spawns `cmd`; resolves once `ready` holds. */
  async function start(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, ready: (out: string) => Promise<boolean> | boolean): Promise<void> {
    const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(child);
    let out = '';
    let exited = false;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', () => (exited = true));
    await waitFor(
      async () => {
        if (exited) throw new Error(`${name} exited: ${out}`);
        return ready(out);
      },
      60_000,
      name,
      100,
    ).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; ${name} said: ${out.slice(-2000)}`);
    });
  }

  beforeAll(async () => {
    if (!commandExists('redis-server') || !commandExists('redis-cli')) unavailable = 'redis-server not on PATH';
    else {
      try {
        ensureNginx();
      } catch (err) {
        unavailable = (err as Error).message;
      }
    }
    if (unavailable) {
      process.stderr.write(`compose.test: loopback stack skipped: ${unavailable}\n`);
      return;
    }
    ports = { redis: await freePort(), ocsp: await freePort(), upstream: await freePort(), admin1: await freePort(), admin2: await freePort() };
    const pkiDir = volumeDirs['pki']!;

    // Redis with the compose file's arguments, on loopback.
    const redisArgs = (services['redis']!.command as string[]).slice(1);
    await start('redis-server', 'redis-server', [...redisArgs, '--port', String(ports['redis']), '--bind', '127.0.0.1'], cleanEnv({}), () => {
      const r = spawnSync('redis-cli', ['-p', String(ports['redis']), 'ping'], { env: cleanEnv({ REDISCLI_AUTH: REDIS_PASSWORD }), encoding: 'utf8' });
      return r.stdout.trim() === 'PONG';
    });

    // The OCSP responder and the demo upstream, as their services run them.
    const ocspArgs = (services['ocsp']!.command as string[]).map((a, i, all) => (all[i - 1] === '--host' ? '127.0.0.1' : all[i - 1] === '--port' ? String(ports['ocsp']) : all[i - 1] === '--dir' ? pkiDir : a));
    await start('ocsp', CLI[0]!, [...CLI.slice(1), ...ocspArgs], cleanEnv({}), (out) => out.includes(`http://127.0.0.1:${ports['ocsp']}`));
    const upstreamArgs = (services['upstream']!.command as string[]).map((a, i, all) => (all[i - 1] === '--listen' ? `127.0.0.1:${ports['upstream']}` : a));
    await start('upstream', CLI[0]!, [...CLI.slice(1), ...upstreamArgs], cleanEnv({}), (out) => out.includes(`http://127.0.0.1:${ports['upstream']}`));

    // Both gates: the compose environment, hosts and ports mapped to loopback. nginx is the
    // trusted proxy at 127.0.0.1 here; the certificates' AIA names http://ocsp:8080, which only
    // the compose network resolves, so GATE_OCSP_URL points the gates at the loopback responder.
    const mapUrl = (url: string, from: string, to: string) => url.replace(`@${from}`, `@${to}`).replace(`//${from}`, `//${to}`);
    gateEnvs = GATES.map((gate, i) => {
      const env = gateEnvOnHost(gate);
      env['GATE_LISTEN'] = `127.0.0.1:${e2eGatePorts[i]}`;
      env['GATE_ADMIN_LISTEN'] = `127.0.0.1:${ports[`admin${i + 1}`]}`;
      env['GATE_REDIS_URL'] = mapUrl(env['GATE_REDIS_URL']!, 'redis:6379', `127.0.0.1:${ports['redis']}`);
      env['GATE_UPSTREAM_URL'] = mapUrl(env['GATE_UPSTREAM_URL']!, 'upstream:8080', `127.0.0.1:${ports['upstream']}`);
      env['GATE_FWD_TRUSTED_PROXIES'] = '127.0.0.1/32';
      env['GATE_OCSP_URL'] = `http://127.0.0.1:${ports['ocsp']}`;
      env['GATE_LOG_LEVEL'] = 'warn';
      expect(loadConfig(env).violations).toEqual([]);
      return env;
    });
    for (const [i, env] of gateEnvs.entries()) {
      // Ready when the image's own HEALTHCHECK says so.
      await start(`gate${i + 1}`, CLI[0]!, [...CLI.slice(1), 'serve'], cleanEnv(env), async () => (await runAsync(process.execPath, [HEALTHCHECK], { env: cleanEnv(env), timeoutMs: 10_000 })).status === 0);
    }

    // nginx with the configuration pki-init rendered (second run, pointed at gate1 on loopback).
    const gArg = argAfter(services['nginx']!.command as string[], '-g')!.split('/var/lib/agent-gate/nginx').join(e2eNginxDir);
    const test = spawnSync('nginx', ['-t', '-p', e2eNginxDir, '-c', join(e2eNginxDir, 'nginx.conf'), '-g', gArg], { encoding: 'utf8' });
    if (test.status !== 0) throw new Error(`nginx -t refused the rendered configuration: ${test.stderr}`);
    nginx = await startNginx(e2eNginxDir, e2eNginxPort);
  }, 240_000);

  afterAll(async () => {
    await nginx?.stop();
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((r) => {
            if (p.exitCode !== null || p.signalCode !== null) return r();
            const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
            p.once('exit', () => (clearTimeout(t), r()));
            p.kill('SIGTERM');
          }),
      ),
    );
  }, 60_000);

  const agentCall = (agent: string, path: string) => {
    const pki = volumeDirs['pki']!;
    return runAsync(CLI[0]!, [...CLI.slice(1), 'agent', 'call', '--cert', join(pki, 'agents', `${agent}.crt`), '--key', join(pki, 'agents', `${agent}.key`), '--ca', join(pki, 'ca.crt'), `https://127.0.0.1:${e2eNginxPort}${path}`], { env: cleanEnv({}) });
  };

  it('Redis runs with persistence off and refuses clients without the password', (ctx) => {
    if (unavailable) ctx.skip();
    const cli = (env: Record<string, string>, ...args: string[]) => spawnSync('redis-cli', ['-p', String(ports['redis']), ...args], { env: cleanEnv(env), encoding: 'utf8' }).stdout.trim();
    expect(cli({}, 'ping')).toMatch(/NOAUTH/);
    expect(cli({ REDISCLI_AUTH: REDIS_PASSWORD }, 'config', 'get', 'save')).toBe('save');
    expect(cli({ REDISCLI_AUTH: REDIS_PASSWORD }, 'config', 'get', 'appendonly')).toBe('appendonly\nno');
  });

  it('an agent completes challenge -> token -> gated call through nginx, both gates ready on the shared store', async (ctx) => {
    if (unavailable) ctx.skip();
    const r = await agentCall('demo', '/hello');
    expect(r.status, r.stderr).toBe(0);
    const body = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(body).toMatchObject({ path: '/hello', agent_id: 'urn:agent:demo' });
    for (const env of gateEnvs) {
      const ready = await fetch(`http://${env['GATE_ADMIN_LISTEN']}/readyz`);
      expect(ready.status).toBe(200);
    }
  }, 60_000);

  it('a revoked agent is refused (OCSP, fail closed)', async (ctx) => {
    if (unavailable) ctx.skip();
    const pki = volumeDirs['pki']!;
    const rev = await runAsync(CLI[0]!, [...CLI.slice(1), 'pki', 'revoke', join(pki, 'agents', 'load-1.crt'), '--dir', pki, '--reason', 'keyCompromise'], { env: cleanEnv({}) });
    expect(rev.status, rev.stderr).toBe(0);
    const r = await agentCall('load-1', '/hello');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/client_cert_revoked/);
  }, 60_000);
});
