/**
 * agent-gate as a library: build a standalone gate from configuration, or register the
 * `agentGate` fastify plugin on your own server.
 * @module
 */
export { buildGate, type Gate, type GateDeps } from './app.js';
export { agentGate, agentGateFrameworkErrors, type AgentGateOptions, type AgentGateDecoration } from './plugin.js';
export type { VerifiedToken } from './tokens/index.js';
export { createServices, loadMaterials, StartupError, type GateServices, type ServiceDeps } from './services.js';
export { loadConfig, formatViolation, type GateConfig, type ConfigViolation } from './config/index.js';
export { GateError, ERROR_CODES, ERROR_STATUS, type ErrorCode } from './errors.js';
export type { AgentIdentity } from './identity/index.js';
