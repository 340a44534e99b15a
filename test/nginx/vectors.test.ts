/**
 * The forwarded-header signature vectors (test/vectors/forwarded.json) against both
 * implementations: the TypeScript one the gate verifies with, and the njs signer nginx runs
 * (nginx/gate_sign.js, executed by a real nginx with Debian's njs module).
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalString, certFromHeader, parseHmacKeys, signCanonical } from '../../src/identity/forwarded-canonical.js';
import { NJS_MODULE_PATH } from '../../src/nginx/index.js';
import { nginxEscapeUriComponent, type ForwardedVectorsFile } from '../../scripts/make-forwarded-vectors.js';
import { freePort } from '../helpers/ports.js';
import { ensureNginx, removeTempDirs, startNginx, tempDir, type RunningNginx } from './harness.js';

const vectorsPath = fileURLToPath(new URL('../vectors/forwarded.json', import.meta.url));
const signerPath = fileURLToPath(new URL('../../nginx/gate_sign.js', import.meta.url));
const file = JSON.parse(readFileSync(vectorsPath, 'utf8')) as ForwardedVectorsFile;
const { vectors } = file;

describe('forwarded vectors: the file', () => {
  it('covers the cases the contract needs', () => {
    const names = vectors.map((v) => v.name);
    expect(names).toEqual(expect.arrayContaining(['cert-p256', 'no-cert', 'failed-verify', 'percent-encoded-uri', 'unicode-uri', 'ipv6-addr', 'rotation-k1', 'rotation-k2']));
    expect(new Set(vectors.map((v) => v.kid)).size).toBeGreaterThanOrEqual(2);
    const noCert = vectors.find((v) => v.name === 'no-cert')!;
    expect([noCert.cert, noCert.thumbprint, noCert.verify]).toEqual(['-', '-', 'NONE']);
    expect(vectors.find((v) => v.name === 'failed-verify')!.verify).toMatch(/^FAILED:/);
    expect(vectors.find((v) => v.name === 'ipv6-addr')!.addr).toContain(':');
  });
});

describe('forwarded vectors: TypeScript (src/identity/forwarded-canonical.ts)', () => {
  for (const v of vectors) {
    it(v.name, () => {
      const secret = parseHmacKeys(`${v.kid}:${v.secret}`).get(v.kid)!;
      // The escaped header is what nginx's $ssl_client_escaped_cert makes of the PEM.
      expect(v.cert).toBe(v.certPem === null ? '-' : nginxEscapeUriComponent(v.certPem));
      expect(certFromHeader(v.cert)?.thumbprint ?? '-').toBe(v.thumbprint);
      const canonical = canonicalString(v);
      expect(canonical).toBe(v.canonical);
      expect(canonical.split('\n')).toHaveLength(10);
      expect(canonical.endsWith('\n')).toBe(false);
      expect(signCanonical(secret, canonical)).toBe(v.sig);
    });
  }
});

// The njs side: a tiny nginx config whose location runs nginx/gate_sign.js's exported
// functions on every vector (and its js_set entry point on a stand-in request).
const SELFTEST_JS = `
import gs from 'gate_sign.js';

function fields(v, thumbprint) {
    return { kid: v.kid, ts: v.ts, id: v.id, method: v.method, requestUri: v.requestUri, host: v.host, addr: v.addr, verify: v.verify, thumbprint: thumbprint };
}

function run(r) {
    // A preloaded array is frozen and has no Array.prototype methods in njs 0.7: index it.
    var out = [];
    for (var i = 0; i < fwd_vectors.vectors.length; i++) out.push(one(fwd_vectors.vectors[i]));
    function one(v) {
        var thumbprint = gs.thumbprintOfHeader(v.cert);
        var canonical = gs.canonical(fields(v, thumbprint));
        var res = { name: v.name, thumbprint: thumbprint, canonical: canonical, sig: gs.hmac(v.secret, canonical) };
        if (v.kid === agent_gate_fwd_key.kid) {
            // sign() as js_set calls it, on a stand-in request carrying the vector's variables.
            var errors = [];
            var fake = {
                method: v.method,
                error: function (m) { errors.push(m); },
                variables: {
                    msec: v.ts + '.123', request_id: v.id, request_uri: v.requestUri, host: v.host,
                    remote_addr: v.addr, ssl_client_verify: v.verify, ssl_client_escaped_cert: v.cert === '-' ? '' : v.cert
                }
            };
            res.signed = gs.sign(fake);
            res.errors = errors;
            var w = fake.variables;
            res.sent = { kid: w.gate_fwd_kid, ts: w.gate_fwd_ts, id: w.gate_fwd_id, host: w.gate_fwd_host, addr: w.gate_fwd_addr, verify: w.gate_fwd_verify, cert: w.gate_fwd_cert, thumbprint: w.gate_fwd_thumbprint };
        }
        return res;
    }
    // What sign() must refuse: it returns "" (the config then answers 500 -> 502) and logs why.
    var base = fwd_vectors.vectors[0];
    var bad = [
        ['bad request id', { request_id: 'not-hex' }],
        ['certificate header not PEM', { ssl_client_escaped_cert: '%E2%9C%93' }],
        ['no host', { host: '' }]
    ].map(function (c) {
        var errors = [];
        var vars = { msec: base.ts + '.5', request_id: base.id, request_uri: base.requestUri, host: base.host, remote_addr: base.addr, ssl_client_verify: 'NONE', ssl_client_escaped_cert: '' };
        Object.keys(c[1]).forEach(function (k) { vars[k] = c[1][k]; });
        var signed = gs.sign({ method: 'GET', error: function (m) { errors.push(m); }, variables: vars });
        return { name: c[0], signed: signed, errors: errors, sentTs: vars.gate_fwd_ts === undefined ? null : vars.gate_fwd_ts };
    });
    r.headersOut['Content-Type'] = 'application/json';
    r.return(200, JSON.stringify({ vectors: out, refusals: bad }));
}

export default { run };
`;

interface NjsResult {
  name: string;
  thumbprint: string;
  canonical: string;
  sig: string;
  signed?: string;
  errors?: string[];
  sent?: Record<string, string>;
}

describe('forwarded vectors: njs (nginx/gate_sign.js in a real nginx)', () => {
  let nginx: RunningNginx;
  let results: NjsResult[];
  let refusals: { name: string; signed: string; errors: string[]; sentTs: string | null }[];
  const k1 = vectors.find((v) => v.kid === 'k1')!;

  beforeAll(async () => {
    ensureNginx();
    const dir = tempDir('vectors');
    const port = await freePort();
    copyFileSync(signerPath, join(dir, 'gate_sign.js'));
    copyFileSync(vectorsPath, join(dir, 'vectors.json'));
    writeFileSync(join(dir, 'key.json'), JSON.stringify({ kid: k1.kid, secret: k1.secret }), { mode: 0o600 });
    writeFileSync(join(dir, 'selftest.js'), SELFTEST_JS);
    writeFileSync(
      join(dir, 'nginx.conf'),
      `load_module ${NJS_MODULE_PATH};
error_log "${dir}/error.log" notice;
events {}
http {
    access_log off;
    client_body_temp_path "${dir}/cb"; proxy_temp_path "${dir}/px"; fastcgi_temp_path "${dir}/fc"; uwsgi_temp_path "${dir}/uw"; scgi_temp_path "${dir}/sc";
    js_path "${dir}";
    js_import selftest from selftest.js;
    js_preload_object fwd_vectors from "${dir}/vectors.json";
    js_preload_object agent_gate_fwd_key from "${dir}/key.json";
    server {
        listen 127.0.0.1:${port};
        location / { js_content selftest.run; }
    }
}
`,
    );
    nginx = await startNginx(dir, port);
    const res = await request(`http://127.0.0.1:${port}/`);
    const text = await res.body.text();
    expect(res.statusCode, `${text}\n${nginx.errorLog()}`).toBe(200);
    ({ vectors: results, refusals } = JSON.parse(text) as { vectors: NjsResult[]; refusals: typeof refusals });
  });

  afterAll(async () => {
    await nginx?.stop();
    removeTempDirs();
  });

  for (const v of vectors) {
    it(v.name, () => {
      const got = results.find((r) => r.name === v.name);
      expect(got).toBeDefined();
      expect(got!.thumbprint).toBe(v.thumbprint);
      expect(got!.canonical).toBe(v.canonical);
      expect(got!.sig).toBe(v.sig);
      if (v.kid === 'k1') {
        // The js_set entry point signs the same string and hands on exactly the signed values.
        expect(got!.errors).toEqual([]);
        expect(got!.signed).toBe(v.sig);
        expect(got!.sent).toEqual({ kid: v.kid, ts: v.ts, id: v.id, host: v.host, addr: v.addr, verify: v.verify, cert: v.cert, thumbprint: v.thumbprint });
      }
    });
  }

  it('sign() refuses what it cannot sign: returns "", logs why, sets no header value', () => {
    expect(results).toHaveLength(vectors.length);
    expect(refusals.map((r) => r.name)).toEqual(['bad request id', 'certificate header not PEM', 'no host']);
    for (const r of refusals) {
      expect(r.signed, r.name).toBe('');
      expect(r.sentTs, r.name).toBeNull();
      expect(r.errors, r.name).toHaveLength(1);
      expect(r.errors[0], r.name).toMatch(/^agent-gate: cannot sign the forwarded headers, refusing the request: /);
    }
  });
});
