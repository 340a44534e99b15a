/**
 * nginx in front of the gate (forwarded mode, PROTOCOL.md sections 6 and 12).
 * @module
 */
export { DEFAULT_PATH_PREFIX, NGINX_FILES, NJS_MODULE_PATH, renderNginxConfig } from './render.js';
export type { AuthorizerNginxOptions, NginxConfigOptions, NginxMode, RenderedNginxConfig } from './render.js';
export { AUTHZ_DEFAULTS, identityRate, parseMode, upstreamHeaderLines, X_FORWARDED_NAMES } from './authorizer.js';
