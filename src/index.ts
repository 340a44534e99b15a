/**
 * agent-gate as a library: build a gate from configuration, or use its parts.
 * @module
 */
export { buildGate, loadMaterials, StartupError, type Gate, type GateDeps } from './app.js';
export { loadConfig, formatViolation, type GateConfig, type ConfigViolation } from './config/index.js';
export { GateError, ERROR_CODES, ERROR_STATUS, type ErrorCode } from './errors.js';
export type { AgentIdentity } from './identity/index.js';
