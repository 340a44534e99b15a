/**
 * The authorizer endpoint's path (PROTOCOL.md section 13), in one place for the route, the
 * forwarded-header verifier and the nginx renderer.
 * @module
 */

/** `P/v1/authorize` for the gate path prefix `P`. */
export function authorizeRoute(pathPrefix: string): string {
  return `${pathPrefix}/v1/authorize`;
}
