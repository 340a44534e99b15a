/**
 * Direct mode (the gate terminates TLS and proxies) over real TLS against a real redis-server:
 * the contract of test/conformance/contract.ts, then what only a proxying gate does (header
 * hygiene, body bounds, upstream failures).
 */
import { describe, expect, inject, it } from 'vitest';
import { GateClient } from '../../src/client/index.js';
import { startGate, testEnv } from '../helpers/gate.js';
import { rawRequest } from '../helpers/http.js';
import { startUpstream, type RecordingUpstream } from '../helpers/upstream.js';
import { contractEnv, denyViaAdmin, describeGateContract, upstreamSide } from './contract.js';

let up: RecordingUpstream;
let clockOffsetMs = 0;

const contract = describeGateContract('direct', async (fx) => {
  up = await startUpstream();
  const gw = await startGate(testEnv(fx, { ...contractEnv(fx), GATE_STORE: 'redis', GATE_REDIS_URL: inject('redisUrl'), GATE_UPSTREAM_URL: up.url }), {
    now: () => Date.now() + clockOffsetMs,
  });
  return {
    url: gw.url,
    ...upstreamSide(up),
    setClock: (ms) => (clockOffsetMs = ms),
    tokenTtlS: 300,
    deny: (id) => denyViaAdmin(gw.adminUrl, id),
    close: async () => {
      await gw.close();
      await up.close();
    },
  };
});

/** An SDK client of `fx.agents.p256` for `baseUrl`, closed with the file. */
function p256Client(baseUrl: string): GateClient {
  const { fx } = contract();
  const c = new GateClient({ baseUrl, cert: fx.agents.p256.certPem, key: fx.agents.p256.keyPem, ca: fx.ca.certPem, servername: 'localhost' });
  onClose.push(() => c.close());
  return c;
}
const onClose: (() => Promise<void>)[] = [];

describe('direct mode: what the proxy passes on', () => {
  it('method, target and body reach the upstream as sent; Authorization does not', async () => {
    const c = contract().client('p256');
    const res = await c.request('/api/things?q=1', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
    expect(res.status).toBe(200);
    const seen = up.seen.at(-1)!;
    expect([seen.method, seen.url, seen.body.toString()]).toEqual(['POST', '/api/things?q=1', 'hello']);
    expect(seen.headers['x-agent-id']).toBe('urn:agent:p256');
    expect(seen.headers.authorization).toBeUndefined();
  });

  it('spoofed inbound identity and gate headers never reach the upstream; hop-by-hop headers are dropped', async () => {
    const { fx, gate } = contract();
    const c = contract().client('p256');
    const token = await c.getToken();
    // Raw bytes, so that Connection and odd header names arrive exactly as written.
    const head = [
      'GET /spoof HTTP/1.1',
      'Host: localhost',
      `Authorization: Bearer ${token}`,
      'x-agent-id: urn:agent:admin',
      'X-Agent-Thumbprint: forged',
      'x_agent_token_id: forged',
      'x-gate-fwd-cert: forged',
      'X_GATE_anything: forged',
      'Connection: close, x-secret-hop',
      'x-secret-hop: drop me',
      'x-keep: kept',
    ];
    const r = await rawRequest(gate.url, fx, fx.agents.p256, head.join('\r\n') + '\r\n\r\n');
    expect(r.status).toBe(200);
    const seen = up.seen.at(-1)!;
    expect(seen.url).toBe('/spoof');
    expect(seen.headers['x-agent-id']).toBe('urn:agent:p256');
    expect(seen.headers['x-agent-thumbprint']).toBe(c.thumbprint);
    expect(seen.headers['x-agent-token-id']).not.toBe('forged');
    expect(seen.headers['x-gate-fwd-cert']).toBeUndefined();
    expect(seen.headers['x_gate_anything']).toBeUndefined();
    expect(seen.headers['x_agent_token_id']).toBeUndefined();
    expect(seen.headers['x-secret-hop']).toBeUndefined();
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers['x-keep']).toBe('kept');
  });

  it('a proxied body over GATE_PROXY_MAX_BODY_BYTES: 413; upstream never sees it', async () => {
    const { fx } = contract();
    const small = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: up.url, GATE_PROXY_MAX_BODY_BYTES: '1000' }));
    try {
      const c = p256Client(small.url);
      const before = up.seen.length;
      const r = await c.request('/big', { method: 'POST', body: Buffer.alloc(1001) });
      expect(r.status).toBe(413);
      expect(up.seen.length).toBe(before);
      expect((await c.request('/ok', { method: 'POST', body: Buffer.alloc(1000) })).status).toBe(200);
    } finally {
      await small.close();
      await Promise.all(onClose.splice(0).map((f) => f()));
    }
  });
});

describe('direct mode: upstream failures', () => {
  it('upstream down: 502 upstream_unavailable; slow: 504 upstream_timeout', async () => {
    const { fx } = contract();
    const dead = await startUpstream();
    const deadUrl = dead.url;
    await dead.close();
    const g1 = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: deadUrl }));
    const slow = await startUpstream();
    slow.delayMs = 2000;
    const g2 = await startGate(testEnv(fx, { GATE_STORE: 'memory', GATE_UPSTREAM_URL: slow.url, GATE_UPSTREAM_TIMEOUT_MS: '300' }));
    try {
      const r1 = await p256Client(g1.url).request('/x');
      expect(r1.status).toBe(502);
      expect((r1.json() as { code: string }).code).toBe('upstream_unavailable');
      const r2 = await p256Client(g2.url).request('/x');
      expect(r2.status).toBe(504);
      expect((r2.json() as { code: string }).code).toBe('upstream_timeout');
    } finally {
      await Promise.all(onClose.splice(0).map((f) => f()));
      await Promise.all([g1.close(), g2.close()]);
      await slow.close();
    }
  });
});

describe('direct mode: client SDK', () => {
  it('caches the token across calls', async () => {
    const c = contract().client('p256');
    const t1 = await c.getToken();
    expect(await c.getToken()).toBe(t1);
  });
});
