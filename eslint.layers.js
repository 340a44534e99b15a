// @ts-check
/**
 * The layers of src/ for eslint-plugin-boundaries: `npm run check` fails on an import against
 * them (test/gate/layers.test.ts shows that it does). First matching element wins.
 *   lib (pure helpers) and the error catalog (src/errors.ts)
 *   <- capability (identity, tokens, store, ratelimit, revocation, audit, attestation, metrics,
 *      proxy, operator, http, challenge, config)
 *   <- gate (the decision path: checks, tables, runner, the gate's routes)
 *   <- app (composition: src/*.ts, admin, cli, cluster, authorizer)
 * tooling (dev PKI, nginx renderer) and client (the agent SDK) stand beside them.
 */
const CAPABILITIES = ['identity', 'tokens', 'store', 'ratelimit', 'revocation', 'audit', 'attestation', 'metrics', 'proxy', 'operator', 'http', 'challenge', 'config'];

/** Folders and their layer. */
export const layerElements = [
  { type: 'lib', pattern: 'src/lib', partialMatch: false },
  ...CAPABILITIES.map((c) => ({ type: 'capability', pattern: `src/${c}`, partialMatch: false })),
  { type: 'gate', pattern: 'src/gate', partialMatch: false },
  { type: 'client', pattern: 'src/client', partialMatch: false },
  { type: 'tooling', pattern: 'src/{pki,nginx}', partialMatch: false },
  { type: 'app', pattern: 'src/{admin,cli,cluster,authorizer}', partialMatch: false },
  { type: 'app', pattern: 'src', partialMatch: false },
];

/**
 * Single files any layer may use: the error catalog, and pure parts of app folders that
 * capabilities and tooling share (the CPU count, the authorizer's wire format).
 */
export const sharedFiles = [
  { category: 'catalog', pattern: 'src/errors.ts' },
  { category: 'shared', pattern: 'src/cluster/cpus.ts' },
  { category: 'shared', pattern: 'src/authorizer/{carriers,paths}.ts' },
];

/** @param {string[]} types */
const to = (types) => ({ to: { element: { types: { anyOf: types } } } });

export const layerPolicies = [
  { from: { element: { type: 'lib' } }, allow: to(['lib']) },
  { from: { element: { type: 'capability' } }, allow: to(['lib', 'capability']) },
  { from: { element: { type: 'gate' } }, allow: to(['lib', 'capability', 'gate']) },
  { from: { element: { type: 'client' } }, allow: to(['lib', 'client']) },
  { from: { element: { type: 'tooling' } }, allow: to(['lib', 'capability', 'tooling']) },
  { from: { element: { type: 'app' } }, allow: to(['lib', 'capability', 'gate', 'tooling', 'client', 'app']) },
  { allow: { to: { file: { categories: 'catalog' } } } },
  { from: { element: { types: { anyOf: ['capability', 'tooling'] } } }, allow: { to: { file: { categories: 'shared' } } } },
];
