/**
 * The zod schema of the `GATE_*` variables, derived from the option table: nothing is declared
 * here. NEW OPTIONS GO INTO options.ts (its header says what else to touch), never into this file.
 * Nothing else reads `process.env`.
 * @module
 */
import { z } from 'zod';
import { OPTION_ENTRIES, OPTIONS, PROFILES, defaultFor, type GateEnv, type Option } from './options.js';

/** An option's field in the object schema: with a default it always has a value. */
type Field<O> = O extends Option<infer S, infer D> ? (D extends undefined ? z.ZodOptional<S> : z.ZodPrefault<S>) : never;

/** The object shape of the schema, one field per variable. */
export type EnvShape = { [K in keyof typeof OPTIONS]: Field<(typeof OPTIONS)[K]> };

function build(env: GateEnv): z.ZodObject<EnvShape> {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, o] of OPTION_ENTRIES) {
    const d = defaultFor(o, env);
    // prefault: the default is the variable's text, parsed like a set value.
    shape[name] = d === undefined ? o.schema.optional() : o.schema.prefault(d as never);
  }
  return z.object(shape) as unknown as z.ZodObject<EnvShape>;
}

const SCHEMAS = Object.fromEntries(PROFILES.map((p) => [p, build(p)])) as Record<GateEnv, z.ZodObject<EnvShape>>;

/** The schema whose defaults are those of profile `env`. */
export function envSchemaFor(env: GateEnv): z.ZodObject<EnvShape> {
  return SCHEMAS[env];
}

/** The schema with the defaults of `GATE_ENV`'s own default profile (prod). */
export const envSchema = envSchemaFor(defaultFor(OPTIONS.GATE_ENV, 'prod') as GateEnv);

/** The parsed variables: every variable with a default has a value. */
export type RawEnv = z.output<z.ZodObject<EnvShape>>;
