/**
 * `<dir>/pki.json`: settings of a dev PKI that outlive the command that set them, so that
 * `pki init --ocsp-url ...` once makes every later `pki issue` carry the URL.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PUBLIC_FILE_MODE, writeFileAtomic } from './files.js';
import { checkUrl } from './leaf.js';

/** What `pki.json` holds; every field optional. */
export interface DevPkiConfig {
  /** CRL Distribution Point URI put in agent certificates. */
  crlUrl?: string;
  /** OCSP responder URI (AIA) put in agent certificates. */
  ocspUrl?: string;
  /** caIssuers URI (AIA) put in agent certificates. */
  caIssuersUrl?: string;
}

const KEYS = ['crlUrl', 'ocspUrl', 'caIssuersUrl'] as const;

/** Location of the settings file in `dir`. */
export function devPkiConfigPath(dir: string): string {
  return join(resolve(dir), 'pki.json');
}

/** Files: the settings of the PKI in `dir`; empty when the file is absent. Bad content is an error, not ignored. */
export async function readDevPkiConfig(dir: string): Promise<DevPkiConfig> {
  const path = devPkiConfigPath(dir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${path} must hold a JSON object`);
  const out: DevPkiConfig = {};
  for (const key of KEYS) {
    const value = (raw as Record<string, unknown>)[key];
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new Error(`${path}: ${key} must be a string`);
    out[key] = checkUrl(key, value);
  }
  return out;
}

/** Files: writes `config` (URLs checked) as `<dir>/pki.json`. */
export async function writeDevPkiConfig(dir: string, config: DevPkiConfig): Promise<string> {
  const clean: DevPkiConfig = {};
  for (const key of KEYS) {
    const value = config[key];
    if (value !== undefined) clean[key] = checkUrl(key, value);
  }
  const path = devPkiConfigPath(dir);
  await writeFileAtomic(path, `${JSON.stringify(clean, null, 2)}\n`, PUBLIC_FILE_MODE);
  return path;
}
