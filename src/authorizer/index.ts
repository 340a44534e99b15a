/**
 * Authorizer mode (PROTOCOL.md section 13): the gate decides, nginx proxies.
 * @module
 */
export { allowMaxAge, authorizerRoutes, type AuthorizerRoutesOptions } from './route.js';
export { CARRIED_HEADERS, CARRIER, encodeRefusal, type CarriedRefusal } from './carriers.js';
export { authorizeRoute } from './paths.js';
