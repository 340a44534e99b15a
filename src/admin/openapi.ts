/**
 * The OpenAPI 3.1 document served at `/openapi.json` on the admin listener: the admin routes'
 * schemas plus the gate endpoints' schemas from the public app, both from @fastify/swagger.
 * @module
 */
import { ERROR_CODES } from '../errors.js';

/** `info` of the document. */
export const OPENAPI_INFO = {
  title: 'agent-gate',
  version: '1',
  description: 'Gate endpoints (under the path prefix, public listener) and the admin API (admin listener). Errors are RFC 9457 problem+json.',
};

/** The problem document of PROTOCOL.md section 9. */
const PROBLEM = {
  type: 'object',
  required: ['type', 'title', 'status', 'code', 'instance'],
  properties: {
    type: { type: 'string', pattern: '^urn:agent-gate:error:' },
    title: { type: 'string' },
    status: { type: 'integer' },
    code: { type: 'string', enum: ERROR_CODES },
    instance: { type: 'string', pattern: '^urn:agent-gate:refusal:[A-Za-z0-9]{1,64}$' },
  },
};

/** Merges the gate's paths (those under `prefix`) into the admin document. */
export function mergeOpenApi(admin: Record<string, unknown>, gate: Record<string, unknown> | undefined, prefix: string): Record<string, unknown> {
  const paths: Record<string, unknown> = {};
  for (const [p, item] of Object.entries((admin.paths as Record<string, Record<string, Record<string, unknown>>>) ?? {})) {
    // Every admin operation takes the admin credential and answers refusals as problem+json.
    paths[p] = p.startsWith('/admin/v1/') ? Object.fromEntries(Object.entries(item).map(([method, op]) => [method, withAdminRefusals(op)])) : item;
  }
  for (const [p, item] of Object.entries((gate?.paths as Record<string, unknown>) ?? {})) {
    if (p.startsWith(prefix)) paths[p] = item;
  }
  const components = (admin.components as Record<string, Record<string, unknown>> | undefined) ?? {};
  return {
    ...admin,
    servers: [{ url: '/', description: 'admin listener (gate endpoints are served on the public listener)' }],
    paths,
    components: {
      ...components,
      schemas: { ...(components.schemas ?? {}), Problem: PROBLEM },
      securitySchemes: {
        adminBearer: { type: 'http', scheme: 'bearer', description: 'secret from GATE_ADMIN_TOKEN_FILE' },
        adminCertificate: { type: 'mutualTLS', description: 'admin client certificate issued by GATE_ADMIN_CLIENT_CA (admin listener over HTTPS)' },
        agentCertificate: { type: 'mutualTLS', description: 'agent X.509 client certificate (or signed forwarded headers behind nginx)' },
      },
    },
  };
}

/** `op` with the admin credentials as its security and a 4XX problem+json answer. */
function withAdminRefusals(op: Record<string, unknown>): Record<string, unknown> {
  const responses = (op.responses as Record<string, unknown> | undefined) ?? {};
  return {
    ...op,
    security: [{ adminBearer: [] }, { adminCertificate: [] }],
    responses: {
      ...responses,
      '4XX': { description: 'refused (401 without the admin credential; 400, 404, 413, 415 for the request)', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
    },
  };
}
