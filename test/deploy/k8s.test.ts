/**
 * The Kubernetes manifests of deploy/k8s against the gate itself: every manifest parses (the
 * same under YAML 1.1, which kubectl reads, and YAML 1.2), the hardening and availability
 * settings are there, every selector, port, Secret and file path lines up across the files,
 * every GATE_* name is one `envSchema` knows, and the environment the Deployment gives the gate
 * passes the gate's own `loadConfig` with no violation.
 *
 * Files at run time: the loader reads none except the prod signing-key mode check. Paths that
 * do not exist here are fine for it; the signing key is checked for real by running the init
 * container's copy script on a temporary file and handing its output to `loadConfig`.
 *
 * Kubernetes JSON schemas: no package of the raw schemas is on npm, so these are structural
 * checks. When `kubernetes-models` (+ `@kubernetes-models/prometheus-operator` for the
 * ServiceMonitor) is installed, in the repo or in the node_modules directory named by
 * AGENT_GATE_K8S_MODELS, every object is also validated against its OpenAPI schema; when
 * `kubectl` is on PATH, `kubectl kustomize` must build the kustomization.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../../src/config/index.js';
import { envSchema } from '../../src/config/schema.js';
import { cliArgv } from '../helpers/serve.js';

const root = resolve(__dirname, '../..');
const dir = join(root, 'deploy/k8s');

// ---------------------------------------------------------------------------------------------
// Reading the manifests.

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- manifests are untyped data; every use is checked by an expect
type Obj = Record<string, any>;

interface Doc {
  file: string;
  obj: Obj;
}

function parseFile(file: string): Obj[] {
  const text = readFileSync(join(dir, file), 'utf8');
  const read = (version: '1.1' | '1.2') =>
    parseAllDocuments(text, { version, prettyErrors: true }).map((d) => {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      if (d.warnings.length > 0) throw new Error(`${file}: ${d.warnings.map((e) => e.message).join('; ')}`);
      return d.toJS() as unknown;
    });
  const v11 = read('1.1');
  // kubectl reads YAML 1.1 (a bare 0400 is octal, `on` is true); other tools read 1.2. A
  // manifest must mean the same to both.
  const diff = firstDifference(v11, read('1.2'), '');
  if (diff) throw new Error(`${file} reads differently under YAML 1.1 and 1.2 at ${diff}`);
  return v11.filter((d): d is Obj => d !== null && d !== undefined);
}

/** The path and values where two parsed documents first differ, or undefined. */
function firstDifference(a: unknown, b: unknown, path: string): string | undefined {
  if (typeof a === 'object' && a !== null && typeof b === 'object' && b !== null) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      const d = firstDifference((a as Obj)[k], (b as Obj)[k], `${path}/${k}`);
      if (d) return d;
    }
    return undefined;
  }
  return Object.is(a, b) ? undefined : `${path || '/'}: ${JSON.stringify(a)} (1.1) vs ${JSON.stringify(b)} (1.2)`;
}

const files = existsSync(dir) ? readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort() : [];
const docs: Doc[] = files.flatMap((file) => parseFile(file).map((obj) => ({ file, obj })));

function only(kind: string, name?: string, file?: string): Obj {
  const found = docs.filter((d) => d.obj.kind === kind && (name === undefined || d.obj.metadata?.name === name) && (file === undefined || d.file === file));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}${file ? ` in ${file}` : ''}, found ${found.length}`);
  return found[0]!.obj;
}

const kustomization = only('Kustomization');
const configMap = only('ConfigMap', 'agent-gate-config');
const deployment = only('Deployment', 'agent-gate');
const pdb = only('PodDisruptionBudget');
const netpol = only('NetworkPolicy');
const serviceMonitor = only('ServiceMonitor');
const publicService = only('Service', 'agent-gate');
const metricsService = only('Service', 'agent-gate-metrics');
const exampleSecrets = docs.filter((d) => d.file === 'secrets.example.yaml').map((d) => d.obj);

const podSpec: Obj = deployment.spec.template.spec;
const podLabels: Record<string, string> = deployment.spec.template.metadata.labels;
const gate: Obj = podSpec.containers.find((c: Obj) => c.name === 'agent-gate');
const initContainers: Obj[] = podSpec.initContainers ?? [];
const allContainers: Obj[] = [...initContainers, ...podSpec.containers];
const cmData: Record<string, unknown> = configMap.data;
const prefix = String(cmData.GATE_PATH_PREFIX ?? '/.agent-gate');

const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

function containerPort(c: Obj, port: string | number): number {
  if (typeof port === 'number') return port;
  const p = (c.ports as Obj[]).find((x) => x.name === port);
  if (!p) throw new Error(`container ${c.name} has no port named ${port}`);
  return p.containerPort as number;
}

/** CPU in cores, memory in bytes, from a Kubernetes quantity. */
function quantity(q: string | number): number {
  const s = String(q);
  const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?$/.exec(s);
  if (!m) throw new Error(`unsupported quantity ${s}`);
  const scale: Record<string, number> = { m: 1e-3, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 };
  return Number(m[1]) * (m[2] ? scale[m[2]]! : 1);
}

// ---------------------------------------------------------------------------------------------
// The environment the Deployment gives the gate.

const knownVars = new Set(Object.keys(envSchema.shape));
const SECRET_VARS = ['GATE_FWD_HMAC_KEYS', 'GATE_REDIS_URL', 'GATE_SIGNING_JWK'];

/** Test values for the variables that come from Secrets, valid where the example's are placeholders. */
const secretTestValues: Record<string, string> = {
  GATE_FWD_HMAC_KEYS: `k1:${randomBytes(32).toString('base64')}`,
  GATE_REDIS_URL: 'rediss://:test-password@redis.test.internal:6380/0',
};

function deploymentEnv(secretValue: (name: string, ref: Obj) => string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of gate.envFrom ?? []) {
    expect(from.configMapRef?.name, 'envFrom only from the agent-gate ConfigMap').toBe('agent-gate-config');
    for (const [k, v] of Object.entries(cmData)) env[k] = String(v);
  }
  for (const e of gate.env ?? []) {
    if (e.valueFrom) env[e.name] = secretValue(e.name, e.valueFrom.secretKeyRef);
    else env[e.name] = String(e.value);
  }
  return env;
}

function exampleSecretValue(_name: string, ref: Obj): string {
  const s = exampleSecrets.find((x) => x.metadata.name === ref.name);
  const v = s?.stringData?.[ref.key];
  if (typeof v !== 'string') throw new Error(`secret ${ref.name} key ${ref.key} not in secrets.example.yaml`);
  return v;
}

const work = mkdtempSync(join(tmpdir(), 'agent-gate-k8s-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------

describe('deploy/k8s: files', () => {
  it('has the manifests, each object named, in the kustomization namespace', () => {
    for (const f of ['deployment.yaml', 'service.yaml', 'pdb.yaml', 'networkpolicy.yaml', 'servicemonitor.yaml', 'secrets.example.yaml', 'configmap.yaml', 'kustomization.yaml']) {
      expect(files).toContain(f);
    }
    expect(kustomization.namespace).toBe('agent-gate');
    for (const { file, obj } of docs) {
      if (obj.kind === 'Kustomization') continue;
      expect(typeof obj.apiVersion, `${file}: apiVersion`).toBe('string');
      expect(obj.metadata?.name, `${file}: metadata.name`).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      if (obj.kind !== 'Namespace') expect(obj.metadata.namespace, `${file}: ${obj.kind} namespace`).toBe(kustomization.namespace);
    }
  });

  it('kustomization lists every manifest except the secrets example', () => {
    const listed = [...(kustomization.resources as string[])].sort();
    expect(listed).toEqual(files.filter((f) => f !== 'kustomization.yaml' && f !== 'secrets.example.yaml'));
    expect(docs.filter((d) => d.file !== 'secrets.example.yaml' && d.obj.kind === 'Secret')).toEqual([]);
  });

  it('the secrets example is marked as such, and its placeholders cannot run a gate', () => {
    const text = readFileSync(join(dir, 'secrets.example.yaml'), 'utf8');
    expect(text).toMatch(/DO NOT APPLY/);
    expect(text).toMatch(/secret manager/);
    expect(exampleSecrets.length).toBeGreaterThan(0);
    for (const s of exampleSecrets) {
      expect(s.kind).toBe('Secret');
      expect(s.data, `${s.metadata.name}: placeholders in stringData, not base64 data`).toBeUndefined();
      for (const [k, v] of Object.entries(s.stringData as Record<string, string>)) expect(v, `${s.metadata.name}/${k}`).toMatch(/REPLACE/);
    }
    const { violations } = loadConfig(deploymentEnv(exampleSecretValue));
    expect(violations.map((v) => v.variable)).toContain('GATE_FWD_HMAC_KEYS');
  });

  it('every GATE_* name in deploy/k8s (manifests, comments, README) is a variable the gate knows', () => {
    const texts = [...files, ...(existsSync(join(dir, 'README.md')) ? ['README.md'] : [])].map((f) => [f, readFileSync(join(dir, f), 'utf8')] as const);
    for (const [f, text] of texts) {
      for (const name of text.match(/\bGATE_[A-Z0-9_]*[A-Z0-9]/g) ?? []) expect(knownVars.has(name), `${f}: ${name}`).toBe(true);
    }
  });
});

describe('deploy/k8s: Deployment', () => {
  it('runs two replicas, never fewer ready during a rollout, selector matching the pod', () => {
    expect(deployment.spec.replicas).toBe(2);
    expect(deployment.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);
    expect(matches(deployment.spec.selector.matchLabels, podLabels)).toBe(true);
  });

  it('pod: non-root user 1000, RuntimeDefault seccomp, no API token, no service links', () => {
    const sc = podSpec.securityContext;
    expect(sc.runAsNonRoot).toBe(true);
    expect(sc.runAsUser).toBe(1000);
    expect(sc.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    expect(typeof sc.fsGroup, 'fsGroup: the gate reads root-written Secret files through it').toBe('number');
    expect(podSpec.automountServiceAccountToken).toBe(false);
    expect(podSpec.enableServiceLinks).toBe(false);
    expect(podSpec.hostNetwork ?? false).toBe(false);
  });

  it.each(allContainers.map((c) => [c.name as string, c]))('container %s: read-only root, non-root, no privilege, all capabilities dropped, resources set', (_name, c) => {
    const sc = c.securityContext;
    expect(sc.readOnlyRootFilesystem).toBe(true);
    expect(sc.runAsNonRoot).toBe(true);
    expect(sc.runAsUser).toBe(1000);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.privileged ?? false).toBe(false);
    expect(sc.capabilities.drop).toEqual(['ALL']);
    expect(sc.capabilities.add).toBeUndefined();
    expect(sc.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    for (const r of ['cpu', 'memory']) {
      expect(c.resources.requests[r], `${r} request`).toBeDefined();
      expect(c.resources.limits[r], `${r} limit`).toBeDefined();
      expect(quantity(c.resources.requests[r])).toBeLessThanOrEqual(quantity(c.resources.limits[r]));
    }
  });

  it('gate CPU and memory fit its worker processes: requests their measured use, the memory limit their heap bound; /tmp is an emptyDir', () => {
    // The pod runs GATE_WORKERS workers, each a Node process with its own heap, and a primary
    // when there is more than one (load/RESULTS.md: primary ~110-115 MiB, workers 158-165 MiB
    // peak RSS on the default heap, target < 200 MiB). An explicit count: `auto` would follow
    // the CPU limit without the memory following it.
    const MiB = 2 ** 20;
    const workers = Number(cmData.GATE_WORKERS);
    expect(Number.isInteger(workers) && workers >= 1, `GATE_WORKERS=${String(cmData.GATE_WORKERS)}`).toBe(true);
    expect(workers).toBeLessThanOrEqual(Math.ceil(quantity(gate.resources.limits.cpu)));
    // capacity-planning.md plans 0.6 core per worker.
    expect(quantity(gate.resources.requests.cpu)).toBeGreaterThanOrEqual(0.6 * workers - 1e-9);
    const primary = workers > 1 ? 120 * MiB : 0;
    expect(quantity(gate.resources.requests.memory)).toBeGreaterThanOrEqual(primary + workers * 165 * MiB);
    expect(quantity(gate.resources.limits.memory)).toBeGreaterThanOrEqual((primary + workers * 200 * MiB) * 1.25);
    // Above every worker at its old-space bound (plus ~128 MiB of code, new space and native
    // memory): V8 stops one worker, which the primary restarts, before the kernel kills the pod.
    const env = (gate.env as Obj[]).find((e) => e.name === 'NODE_OPTIONS');
    const bound = Number(/--max-old-space-size=(\d+)/.exec(String(env?.value))?.[1]);
    expect(bound, 'NODE_OPTIONS --max-old-space-size').toBeGreaterThan(0);
    expect(quantity(gate.resources.limits.memory)).toBeGreaterThanOrEqual(primary + workers * (bound + 128) * MiB);
    const tmp = (gate.volumeMounts as Obj[]).find((m) => m.mountPath === '/tmp');
    expect(tmp).toBeDefined();
    expect((podSpec.volumes as Obj[]).find((v) => v.name === tmp!.name)?.emptyDir).toBeDefined();
  });

  it('probes: readiness on P/readyz, liveness and startup on P/healthz, HTTPS on the public port', () => {
    const expectProbe = (probe: Obj | undefined, path: string) => {
      expect(probe?.httpGet?.path).toBe(path);
      expect(probe!.httpGet.scheme).toBe('HTTPS');
      expect(containerPort(gate, probe!.httpGet.port)).toBe(8443);
    };
    expectProbe(gate.readinessProbe, `${prefix}/readyz`);
    expectProbe(gate.livenessProbe, `${prefix}/healthz`);
    expectProbe(gate.startupProbe, `${prefix}/healthz`);
  });

  it('container ports match GATE_LISTEN and GATE_ADMIN_LISTEN', () => {
    const { config } = loadConfig(deploymentEnv((name) => secretTestValues[name]!));
    expect(config).toBeDefined();
    expect(containerPort(gate, 'https')).toBe(config!.listen.port);
    expect(containerPort(gate, 'admin')).toBe(config!.adminListen.port);
    expect(config!.listen.host).toBe('0.0.0.0');
    expect(config!.adminListen.host).toBe('0.0.0.0');
  });

  it('grace period covers the preStop sleep plus GATE_DRAIN_TIMEOUT_MS', () => {
    const { config } = loadConfig(deploymentEnv((name) => secretTestValues[name]!));
    const sleep = gate.lifecycle?.preStop?.sleep?.seconds as number;
    expect(sleep).toBeGreaterThanOrEqual(5);
    expect(podSpec.terminationGracePeriodSeconds).toBeGreaterThan(config!.drainTimeoutMs / 1000);
    expect(podSpec.terminationGracePeriodSeconds).toBeGreaterThan(sleep + config!.drainTimeoutMs / 1000);
  });

  it('replicas spread across nodes', () => {
    const spread = (podSpec.topologySpreadConstraints as Obj[]).find((t) => t.topologyKey === 'kubernetes.io/hostname');
    expect(spread?.whenUnsatisfiable).toBe('DoNotSchedule');
    expect(matches(spread!.labelSelector.matchLabels, podLabels)).toBe(true);
    const anti = podSpec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution as Obj[];
    expect(anti.some((a) => a.podAffinityTerm.topologyKey === 'kubernetes.io/hostname' && matches(a.podAffinityTerm.labelSelector.matchLabels, podLabels))).toBe(true);
  });

  it('Secret volumes have defaultMode 0400, are mounted read-only, and exist in the secrets example', () => {
    const secretVolumes = (podSpec.volumes as Obj[]).filter((v) => v.secret);
    expect(secretVolumes.length).toBeGreaterThanOrEqual(5);
    for (const v of secretVolumes) {
      expect(v.secret.defaultMode, `${v.name}: defaultMode`).toBe(0o400);
      for (const item of v.secret.items ?? []) expect(item.mode ?? 0o400, `${v.name}/${item.key}: mode`).toBe(0o400);
      const example = exampleSecrets.find((s) => s.metadata.name === v.secret.secretName);
      expect(example, `${v.secret.secretName} in secrets.example.yaml`).toBeDefined();
      for (const item of v.secret.items ?? []) expect(Object.keys(example!.stringData)).toContain(item.key);
      for (const c of allContainers) {
        for (const m of (c.volumeMounts as Obj[]).filter((x) => x.name === v.name)) expect(m.readOnly, `${c.name} mounts ${v.name} read-only`).toBe(true);
      }
    }
    for (const e of (gate.env as Obj[]).filter((x) => x.valueFrom)) {
      const ref = e.valueFrom.secretKeyRef;
      expect(ref, `${e.name} comes from a Secret`).toBeDefined();
      expect(() => exampleSecretValue(e.name, ref)).not.toThrow();
    }
  });

  it('env: only GATE_* names the gate knows (plus NODE_OPTIONS), secrets never in the ConfigMap', () => {
    const names = [...Object.keys(cmData), ...(gate.env as Obj[]).map((e) => e.name as string)];
    expect(new Set(names).size, 'a name both in the ConfigMap and in env: env silently wins').toBe(names.length);
    for (const n of names) {
      if (n.startsWith('GATE_')) expect(knownVars.has(n), `${n} is a GATE_* variable the gate knows`).toBe(true);
      else expect(n).toBe('NODE_OPTIONS');
    }
    for (const [k, v] of Object.entries(cmData)) expect(typeof v, `ConfigMap ${k} is a string`).toBe('string');
    for (const s of SECRET_VARS) expect(cmData[s], `${s} not in the ConfigMap`).toBeUndefined();
    for (const e of gate.env as Obj[]) if (SECRET_VARS.includes(e.name)) expect(e.valueFrom?.secretKeyRef).toBeDefined();
  });

  it('every file variable points at a file the pod mounts', () => {
    const fileVars = ['GATE_TLS_CERT', 'GATE_TLS_KEY', 'GATE_CLIENT_CA', 'GATE_ADMIN_TLS_CERT', 'GATE_ADMIN_TLS_KEY', 'GATE_ADMIN_CLIENT_CA', 'GATE_ADMIN_TOKEN_FILE', 'GATE_SIGNING_KEY_FILE'];
    const signingInit = initContainers.find((c) => c.name === 'signing-key');
    for (const v of fileVars) {
      const path = cmData[v] as string;
      expect(path, v).toBeDefined();
      const mount = (gate.volumeMounts as Obj[]).find((m) => m.mountPath === dirname(path));
      expect(mount, `${v}: a volume mounted at ${dirname(path)}`).toBeDefined();
      const volume = (podSpec.volumes as Obj[]).find((x) => x.name === mount!.name)!;
      if (volume.secret) expect((volume.secret.items as Obj[]).map((i) => i.path), v).toContain(basename(path));
      else expect(signingInit?.command.at(-1), `${v}: written by the init container`).toBe(path);
    }
  });
});

describe('deploy/k8s: the signing key reaches the gate as a 0400 file', () => {
  const init = initContainers.find((c) => c.name === 'signing-key');

  it('a Secret file as the kubelet leaves it with fsGroup (0440) is refused by prod; the init copy (0400) is accepted', () => {
    expect(init, 'init container signing-key').toBeDefined();
    const [node, flag, script, src, dst] = init!.command as string[];
    expect([node, flag]).toEqual(['node', '-e']);
    expect(dst).toBe(cmData.GATE_SIGNING_KEY_FILE);
    const srcMount = (init!.volumeMounts as Obj[]).find((m) => m.mountPath === dirname(src!));
    expect((podSpec.volumes as Obj[]).find((v) => v.name === srcMount?.name)?.secret?.secretName).toBe('agent-gate-signing');
    const dstMount = (init!.volumeMounts as Obj[]).find((m) => m.mountPath === dirname(dst!));
    expect((podSpec.volumes as Obj[]).find((v) => v.name === dstMount?.name)?.emptyDir?.medium).toBe('Memory');

    const secretFile = join(work, 'signing.jwk.secret');
    const copy = join(work, 'signing.jwk');
    writeFileSync(secretFile, '{"kty":"OKP"}\n');
    chmodSync(secretFile, 0o440);
    // Twice: a restarted init container finds its earlier copy in the emptyDir.
    for (let i = 0; i < 2; i++) {
      const r = spawnSync(process.execPath, ['-e', script!, secretFile, copy], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status, r.stderr).toBe(0);
    }
    expect(statSync(copy).mode & 0o777).toBe(0o400);
    expect(readFileSync(copy, 'utf8')).toBe('{"kty":"OKP"}\n');

    const env = deploymentEnv((name) => secretTestValues[name]!);
    expect(loadConfig({ ...env, GATE_SIGNING_KEY_FILE: secretFile }).violations.map((v) => v.variable)).toEqual(['GATE_SIGNING_KEY_FILE']);
    expect(loadConfig({ ...env, GATE_SIGNING_KEY_FILE: copy }).violations).toEqual([]);
  });
});

describe('deploy/k8s: the gate accepts the configuration', () => {
  it('loadConfig reports no violation for the Deployment environment', () => {
    const { config, violations } = loadConfig(deploymentEnv((name) => secretTestValues[name]!));
    expect(violations).toEqual([]);
    expect(config).toMatchObject({
      env: 'prod',
      mode: 'forwarded',
      pathPrefix: prefix,
      admin: { public: true },
      store: { kind: 'redis' },
      revocation: { mode: 'ocsp,crl', fail: 'closed' },
      tls: { minVersion: 'TLSv1.3' },
      logLevel: 'info',
    });
    expect(config!.admin.tlsCertFile && config!.admin.tlsKeyFile && config!.admin.clientCaFile && config!.admin.tokenFile).toBeTruthy();
    expect(config!.forwarded.trustedProxies).toBeTruthy();
    expect(config!.upstream.url).toMatch(/^https:/);
  });
});

describe('deploy/k8s: Services, PodDisruptionBudget', () => {
  it('the public Service reaches the public port, the metrics Service the admin port', () => {
    expect(matches(publicService.spec.selector, podLabels)).toBe(true);
    expect(publicService.spec.ports).toHaveLength(1);
    expect(containerPort(gate, publicService.spec.ports[0].targetPort)).toBe(8443);
    expect(matches(metricsService.spec.selector, podLabels)).toBe(true);
    expect(metricsService.spec.ports).toHaveLength(1);
    expect(containerPort(gate, metricsService.spec.ports[0].targetPort)).toBe(9464);
  });

  it('PDB keeps one of the two available', () => {
    expect(pdb.spec.minAvailable).toBe(1);
    expect(pdb.spec.maxUnavailable).toBeUndefined();
    expect(matches(pdb.spec.selector.matchLabels, podLabels)).toBe(true);
  });
});

describe('deploy/k8s: NetworkPolicy', () => {
  const portsOf = (rule: Obj) => (rule.ports as Obj[]).map((p) => containerPort(gate, p.port));

  it('selects the gate pods and isolates both directions', () => {
    expect(matches(netpol.spec.podSelector.matchLabels, podLabels)).toBe(true);
    expect([...netpol.spec.policyTypes].sort()).toEqual(['Egress', 'Ingress']);
  });

  it('admits 8443 only from the front proxy pods and 9464 only from Prometheus, nothing else', () => {
    const rules = netpol.spec.ingress as Obj[];
    expect(rules).toHaveLength(2);
    const byPort = new Map(rules.map((r) => [portsOf(r).join(','), r]));
    expect([...byPort.keys()].sort()).toEqual(['8443', '9464']);
    const expectPeer = (rule: Obj, ns: string, pod: Record<string, string>) => {
      // One peer with both selectors: namespace AND pod. Two list items would mean OR.
      expect(rule.from).toHaveLength(1);
      const [peer] = rule.from as Obj[];
      expect(peer!.ipBlock).toBeUndefined();
      expect(peer!.namespaceSelector.matchLabels).toEqual({ 'kubernetes.io/metadata.name': ns });
      expect(peer!.podSelector.matchLabels).toEqual(pod);
      for (const p of rule.ports as Obj[]) expect(p.protocol ?? 'TCP').toBe('TCP');
    };
    expectPeer(byPort.get('8443')!, 'ingress-nginx', { 'app.kubernetes.io/name': 'agent-gate-nginx' });
    expectPeer(byPort.get('9464')!, 'monitoring', { 'app.kubernetes.io/name': 'prometheus' });
  });

  it('lets the gate reach DNS, Redis, the upstream and OCSP/CRL', () => {
    const egress = netpol.spec.egress as Obj[];
    const allows = (port: number, proto = 'TCP') => egress.some((r) => (r.ports as Obj[]).some((p) => p.port === port && (p.protocol ?? 'TCP') === proto));
    expect(allows(53, 'UDP') && allows(53, 'TCP')).toBe(true);
    expect(egress.every((r) => (r.to as Obj[] | undefined)?.length), 'every egress rule names its destination').toBe(true);
    const redisUrl = new URL(exampleSecretValue('GATE_REDIS_URL', { name: 'agent-gate-redis', key: 'url' }));
    expect(allows(Number(redisUrl.port))).toBe(true);
    expect(allows(Number(new URL(cmData.GATE_UPSTREAM_URL as string).port || 443))).toBe(true);
    expect(allows(80)).toBe(true); // OCSP and CRL over http (RFC 6960 appendix A, RFC 5280 4.2.1.13)
  });
});

describe('deploy/k8s: ServiceMonitor', () => {
  it('scrapes /metrics over https on the admin port, presenting a client certificate', () => {
    expect(serviceMonitor.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(matches(serviceMonitor.spec.selector.matchLabels, metricsService.metadata.labels)).toBe(true);
    expect(matches(serviceMonitor.spec.selector.matchLabels, publicService.metadata.labels)).toBe(false);
    // deploy/prometheus/alerts.yml expects job="agent-gate".
    expect(metricsService.metadata.labels[serviceMonitor.spec.jobLabel]).toBe('agent-gate');
    expect(serviceMonitor.spec.endpoints).toHaveLength(1);
    const [ep] = serviceMonitor.spec.endpoints as Obj[];
    expect(ep!.path).toBe('/metrics');
    expect(ep!.scheme).toBe('https');
    const svcPort = (metricsService.spec.ports as Obj[]).find((p) => p.name === ep!.port);
    expect(containerPort(gate, svcPort!.targetPort)).toBe(9464);
    const tls = ep!.tlsConfig;
    expect(tls.insecureSkipVerify ?? false).toBe(false);
    for (const ref of [tls.ca.secret, tls.cert.secret, tls.keySecret]) expect(() => exampleSecretValue('', ref)).not.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------
// Optional: kubectl's own kustomize, and the Kubernetes OpenAPI schemas of kubernetes-models.

const kubectl = spawnSync('sh', ['-c', 'command -v kubectl'], { encoding: 'utf8' }).stdout.trim();

describe('deploy/k8s: tools, when installed', () => {
  it.skipIf(!kubectl)(`kubectl kustomize builds the same objects${kubectl ? '' : ' (skipped: kubectl not on PATH)'}`, () => {
    const r = spawnSync(kubectl, ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const built = parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj);
    const key = (o: Obj) => `${o.kind}/${o.metadata.name}`;
    const expected = docs.filter((d) => (kustomization.resources as string[]).includes(d.file)).map((d) => d.obj);
    expect(built.map(key).sort()).toEqual(expected.map(key).sort());
    const builtDeployment = built.find((o) => o.kind === 'Deployment')!;
    expect(builtDeployment.spec.template.spec.volumes.filter((v: Obj) => v.secret).every((v: Obj) => v.secret.defaultMode === 256)).toBe(true);
  });

  const modelsRoot = [process.env.AGENT_GATE_K8S_MODELS, join(root, 'node_modules')].find((d): d is string => !!d && existsSync(join(d, 'kubernetes-models/package.json')));
  const modelFile = (apiVersion: string, kind: string): string => {
    if (apiVersion.startsWith('monitoring.coreos.com/')) return join(modelsRoot!, '@kubernetes-models/prometheus-operator', apiVersion, `${kind}.js`);
    return join(modelsRoot!, 'kubernetes-models', apiVersion, `${kind}.js`);
  };
  const schemaNote = modelsRoot ? '' : ' (skipped: kubernetes-models not installed; set AGENT_GATE_K8S_MODELS to a node_modules dir that has it)';

  it.skipIf(!modelsRoot)(`every object validates against the Kubernetes OpenAPI schema${schemaNote}`, async () => {
    for (const { file, obj } of docs) {
      if (obj.kind === 'Kustomization') continue;
      const path = modelFile(obj.apiVersion, obj.kind);
      expect(existsSync(path), `${file}: a model for ${obj.apiVersion} ${obj.kind} (${path})`).toBe(true);
      const mod = (await import(pathToFileURL(path).href)) as Record<string, new (o: Obj) => { validate(): void }>;
      const Model = mod[obj.kind]!;
      expect(() => new Model(obj).validate(), `${file}: ${obj.kind} ${obj.metadata.name}`).not.toThrow();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The authorizer topology (PROTOCOL.md section 13): deploy/k8s-authorizer, an overlay of the
// base above (beside it: kustomize refuses an overlay inside its base's directory).

const authzDir = join(root, 'deploy/k8s-authorizer');
function parseOverlay(file: string): Obj[] {
  const text = readFileSync(join(authzDir, file), 'utf8');
  const read = (version: '1.1' | '1.2') => parseAllDocuments(text, { version }).map((d) => d.toJS() as unknown);
  const v11 = read('1.1');
  const diff = firstDifference(v11, read('1.2'), '');
  if (diff) throw new Error(`${file} reads differently under YAML 1.1 and 1.2 at ${diff}`);
  return v11.filter((d): d is Obj => d !== null && d !== undefined);
}

describe('deploy/k8s-authorizer: the authorizer topology', () => {
  const kust = parseOverlay('kustomization.yaml')[0]!;
  const cmPatch = parseOverlay('configmap-patch.yaml')[0]!;
  const front = parseOverlay('nginx.yaml');
  const frontDeployment = front.find((o) => o.kind === 'Deployment')!;
  const frontService = front.find((o) => o.kind === 'Service')!;
  const overlaySecrets = parseOverlay('secrets.example.yaml');
  const frontPod: Obj = frontDeployment.spec.template.spec;
  const render: Obj = frontPod.initContainers.find((c: Obj) => c.name === 'render');
  const nginxC: Obj = frontPod.containers.find((c: Obj) => c.name === 'nginx');
  const script = render.command.at(-1) as string;
  const flag = (name: string): string | undefined => new RegExp(`--${name} ("?)([^"\\s]+)\\1`).exec(script)?.[2];

  /** The gate's environment in the overlay: the base Deployment's, with the ConfigMap patch applied (null removes). */
  function overlayGateEnv(): Record<string, string> {
    const env = deploymentEnv((name) => secretTestValues[name]!);
    for (const [k, v] of Object.entries(cmPatch.data as Record<string, unknown>)) {
      if (v === null) delete env[k];
      else env[k] = String(v);
    }
    return env;
  }

  it('builds on the base with the front tier and the ConfigMap patch, in the same namespace, applying no Secret', () => {
    expect(kust.resources).toEqual(['../k8s', 'nginx.yaml']);
    expect(kust.namespace).toBe(kustomization.namespace);
    expect(cmPatch.metadata.name).toBe(configMap.metadata.name);
    for (const o of front) expect(o.metadata.namespace).toBe(kustomization.namespace);
    expect(front.filter((o) => o.kind === 'Secret')).toEqual([]);
    const text = readFileSync(join(authzDir, 'secrets.example.yaml'), 'utf8');
    expect(text).toMatch(/DO NOT APPLY/);
    for (const s of overlaySecrets) for (const [k, v] of Object.entries(s.stringData as Record<string, string>)) expect(v, `${s.metadata.name}/${k}`).toMatch(/REPLACE/);
    for (const f of readdirSync(authzDir)) {
      for (const name of readFileSync(join(authzDir, f), 'utf8').match(/\bGATE_[A-Z0-9_]*[A-Z0-9]/g) ?? []) expect(knownVars.has(name), `${f}: ${name}`).toBe(true);
    }
  });

  it("the gate's own loadConfig accepts the overlay's environment: authorizer mode, no upstream, the cache nginx is rendered with", () => {
    const env = overlayGateEnv();
    expect(env['GATE_UPSTREAM_URL']).toBeUndefined();
    const { config, violations } = loadConfig(env);
    expect(violations).toEqual([]);
    expect(config).toMatchObject({ env: 'prod', mode: 'authorizer', pathPrefix: prefix });
    const cacheEnv = render.env.find((e: Obj) => e.name === 'AUTHZ_CACHE_S');
    expect(config!.authorizer.cacheS).toBe(Number(cacheEnv.value));
    expect(script).toContain('--authz-cache-s "$AUTHZ_CACHE_S"');
    const rate = render.env.find((e: Obj) => e.name === 'RATE_PROXY_IDENTITY').value as string;
    expect(rate).toBe(String(cmData.GATE_RATE_PROXY_IDENTITY ?? '1000/1'));
  });

  it('renders nginx at pod start with --mode authorizer: gate URL, HMAC key and files line up with the base', () => {
    expect(script).toMatch(/agent-gate nginx-config --mode authorizer/);
    // The gate: the base's public Service, its port, the name of the gate's certificate.
    const gateUrl = new URL(flag('gate-url')!);
    expect(gateUrl.protocol).toBe('https:');
    expect(gateUrl.hostname).toBe(`${publicService.metadata.name}.${kustomization.namespace}.svc`);
    const svcPort = (publicService.spec.ports as Obj[]).find((p) => p.port === Number(gateUrl.port));
    expect(svcPort, 'the Service port the URL names').toBeTruthy();
    expect(containerPort(gate, svcPort!.targetPort)).toBe(Number(String(cmData.GATE_LISTEN).split(':').at(-1)));
    expect(flag('gate-tls-name')).toBe(gateUrl.hostname);
    expect(flag('path-prefix')).toBe(prefix);
    // The HMAC key: the same Secret key the gates read GATE_FWD_HMAC_KEYS from.
    const gateHmac = gate.env.find((e: Obj) => e.name === 'GATE_FWD_HMAC_KEYS').valueFrom.secretKeyRef;
    expect(render.env.find((e: Obj) => e.name === 'FWD_HMAC_KEYS').valueFrom.secretKeyRef).toEqual(gateHmac);
    // Every file flag is under a mount of the init container, from a Secret that exists.
    const allSecrets = [...exampleSecrets, ...overlaySecrets];
    for (const f of ['gate-ca', 'upstream-ca', 'tls-cert', 'tls-key', 'client-ca']) {
      const path = flag(f)!;
      const m = (render.volumeMounts as Obj[]).find((vm) => path.startsWith(`${vm.mountPath}/`));
      expect(m, `--${f} ${path} is mounted`).toBeTruthy();
      expect(m!.readOnly, `--${f}`).toBe(true);
      const vol = (frontPod.volumes as Obj[]).find((v) => v.name === m!.name)!;
      expect(vol.secret.defaultMode).toBe(256);
      const secret = allSecrets.find((s) => s.metadata.name === vol.secret.secretName);
      expect(secret, `Secret ${vol.secret.secretName}`).toBeTruthy();
      expect(Object.keys(secret!.stringData)).toContain(basename(path));
    }
    // nginx runs what was rendered: its prefix is --dir, on the same volume.
    const dirFlag = flag('dir')!;
    expect(nginxC.args[nginxC.args.indexOf('-p') + 1]).toBe(dirFlag);
    expect(nginxC.args[nginxC.args.indexOf('-c') + 1]).toBe(`${dirFlag}/nginx.conf`);
    const confOf = (c: Obj) => (c.volumeMounts as Obj[]).find((vm) => vm.mountPath === dirFlag)?.name;
    expect(confOf(render)).toBeDefined();
    expect(confOf(nginxC)).toBe(confOf(render));
    expect((frontPod.volumes as Obj[]).find((v) => v.name === confOf(render))!.emptyDir.medium, 'config, key copy and decision cache in memory').toBe('Memory');
    // Listening where the Service sends agents.
    const listenPort = Number(flag('listen')!.split(':').at(-1));
    expect(containerPort(nginxC, frontService.spec.ports[0].targetPort)).toBe(listenPort);
    expect(frontService.spec.type).toBe('LoadBalancer');
    expect(nginxC.readinessProbe.httpGet.path).toBe(`${prefix}/readyz`);
  });

  it('hardens the front tier as the gates: non-root, read-only root, no capabilities, no API token', () => {
    expect(frontPod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(frontPod.automountServiceAccountToken).toBe(false);
    expect(frontPod.enableServiceLinks).toBe(false);
    for (const c of [...frontPod.initContainers, ...frontPod.containers] as Obj[]) {
      expect(c.securityContext, c.name).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
      expect(c.resources?.limits?.memory, c.name).toBeDefined();
    }
    expect(frontDeployment.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(matches(frontDeployment.spec.selector.matchLabels, frontDeployment.spec.template.metadata.labels)).toBe(true);
    expect(matches(frontService.spec.selector, frontDeployment.spec.template.metadata.labels)).toBe(true);
    // The gates' NetworkPolicy admits the front tier's pods: the base's pod selector, this namespace.
    const rule = netpol.spec.ingress[0].from[0];
    expect(matches(rule.podSelector.matchLabels, frontDeployment.spec.template.metadata.labels)).toBe(true);
    const op = (kust.patches as Obj[]).find((p) => p.target?.kind === 'NetworkPolicy')!;
    expect(op.patch).toContain('/spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name');
    expect(op.patch).toContain(`value: ${kustomization.namespace}`);
  });

  it("the render script runs: the real CLI renders nginx.conf from the script's own flags", async () => {
    const { makeFixtures } = await import('../helpers/fixtures.js');
    const fx = await makeFixtures();
    const tmp = mkdtempSync(join(work, 'authz-render-'));
    const mapped = script
      .replaceAll('/etc/agent-gate/nginx-tls/tls.crt', fx.serverCertFile)
      .replaceAll('/etc/agent-gate/nginx-tls/tls.key', fx.serverKeyFile)
      .replace(/\/etc\/agent-gate\/[a-z-]+\/ca\.crt/g, fx.caFile)
      .replaceAll('/tmp/hmac.key', join(tmp, 'hmac.key'))
      .replaceAll('/run/nginx', join(tmp, 'out'))
      .replace('exec agent-gate', `exec ${[process.execPath, ...cliArgv()].join(' ')}`);
    const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? tmp, FWD_HMAC_KEYS: `k9:${randomBytes(32).toString('base64')},k1:${randomBytes(32).toString('base64')}` };
    for (const e of render.env as Obj[]) if (e.value !== undefined) env[e.name] = String(e.value);
    const r = spawnSync('sh', ['-c', mapped], { encoding: 'utf8', env, cwd: root, timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const conf = readFileSync(join(tmp, 'out', 'nginx.conf'), 'utf8');
    expect(conf).toContain('auth_request /./agent-gate-authorize;');
    expect(conf).toMatch(/upstream agent_gate \{\s*server agent-gate\.agent-gate\.svc:8443;/);
    expect(conf).toMatch(/upstream agent_gate_upstream \{\s*server protected-api\.protected-api\.svc\.cluster\.local:8443;/);
    expect(conf).toContain('proxy_ssl_verify on;');
    // The first key entry signs.
    expect(readFileSync(join(tmp, 'out', 'gate_fwd_key.json'), 'utf8')).toContain('k9');
    expect(statSync(join(tmp, 'out', 'gate_fwd_key.json')).mode & 0o077).toBe(0);
  }, 90_000);

  it.skipIf(!kubectl)(`kubectl kustomize builds the overlay: authorizer ConfigMap without an upstream, the front tier, the NetworkPolicy admitting it${kubectl ? '' : ' (skipped: kubectl not on PATH)'}`, () => {
    const r = spawnSync(kubectl, ['kustomize', authzDir], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const built = parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj);
    const cm = built.find((o) => o.kind === 'ConfigMap')!;
    expect(cm.data.GATE_MODE).toBe('authorizer');
    expect(cm.data.GATE_UPSTREAM_URL).toBeUndefined();
    const env = overlayGateEnv();
    expect(Object.fromEntries(Object.entries(cm.data as Record<string, string>))).toEqual(Object.fromEntries(Object.entries(env).filter(([k]) => k in cm.data)));
    expect(Object.keys(built.find((o) => o.kind === 'ConfigMap')!.data).sort()).toEqual(Object.keys(env).filter((k) => !['GATE_FWD_HMAC_KEYS', 'GATE_REDIS_URL', 'NODE_OPTIONS'].includes(k)).sort());
    expect(built.filter((o) => o.kind === 'Deployment').map((o) => o.metadata.name).sort()).toEqual(['agent-gate', 'agent-gate-nginx']);
    const np = built.find((o) => o.kind === 'NetworkPolicy')!;
    expect(np.spec.ingress[0].from[0].namespaceSelector.matchLabels['kubernetes.io/metadata.name']).toBe(kustomization.namespace);
  });
});
