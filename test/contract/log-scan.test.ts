/** The log scanner of the global teardown finds what it must (so a clean scan means something). */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { scanLogs } from '../setup/log-scan.js';

it('finds tokens, proofs, PEM blocks, escaped certificates, authorization values and private JWKs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ag-logscan-'));
  const planted = [
    '{"msg":"x","token":"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1cm46YWdlbnQ6eCJ9.c2lnbmF0dXJlc2lnbmF0dXJl"}',
    '{"msg":"-----BEGIN PRIVATE KEY-----"}',
    '{"cert":"%2D%2D%2D%2D%2DBEGIN%20CERTIFICATE"}',
    '{"req":{"headers":{"authorization":"Bearer abc"}}}',
    '{"jwk":{"kty":"OKP","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}}',
    '{"req":{"headers":{"authorization":"[redacted]"}}}',
    '{"msg":"request","agent_id":"urn:agent:x","thumbprint":"shYYzOHsogbQ2-jg5a8yo8W2wDxEKZuD9Rta4e3zMjg"}',
  ];
  writeFileSync(join(dir, 'w.log'), planted.join('\n') + '\n');
  const { lines, findings } = scanLogs(dir);
  expect(lines).toBe(7);
  expect(findings.map((f) => f.split(': ')[1])).toEqual([
    'JWS (token or proof)',
    'PEM block (key or certificate)',
    'URL-encoded PEM (x-gate-fwd-cert)',
    'Authorization header value',
    'private JWK member',
  ]);
});
