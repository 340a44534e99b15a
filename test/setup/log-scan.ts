/**
 * What must never appear in a log line (issue: no token, proof, private key, HMAC secret or
 * certificate body is ever logged). The global teardown runs this over every test gate's log.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** Patterns of secrets and certificate material, each with a name for the report. */
export const FORBIDDEN: [string, RegExp][] = [
  // Compact JWS/JWT: access tokens and proofs (base64url JSON header starting with {").
  ['JWS (token or proof)', /eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/],
  ['PEM block (key or certificate)', /-----BEGIN [A-Z ]+-----/],
  ['URL-encoded PEM (x-gate-fwd-cert)', /%2D%2D%2D%2D%2DBEGIN|-----BEGIN%20/i],
  ['Authorization header value', /"authorization":\s*"(?!\[redacted\])/i],
  ['forwarded signature header value', /"x-gate-fwd-sig":\s*"(?!\[redacted\])/i],
  ['private JWK member', /"d":\s*"[A-Za-z0-9_-]{20,}"/],
];

/** Removes old logs so a run only judges its own. */
export function resetLogs(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Every forbidden match in the log files of `dir`, as report lines. */
export function scanLogs(dir: string): { files: number; lines: number; findings: string[] } {
  const findings: string[] = [];
  let lines = 0;
  if (!existsSync(dir)) return { files: 0, lines: 0, findings };
  const files = readdirSync(dir).filter((f) => f.endsWith('.log'));
  for (const f of files) {
    const text = readFileSync(join(dir, f), 'utf8');
    text.split('\n').forEach((line, i) => {
      if (!line) return;
      lines++;
      for (const [name, re] of FORBIDDEN) if (re.test(line)) findings.push(`${f}:${i + 1}: ${name}`);
    });
  }
  return { files: files.length, lines, findings };
}
