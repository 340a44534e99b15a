/**
 * Configuration: the only module that reads `GATE_*` variables.
 * @module
 */
export { loadConfig, formatViolation, isLoopbackHost } from './load.js';
export type { GateConfig, GateEnv, ConfigViolation, LoadedConfig, LoadOptions, ListenAddress, RateSpec } from './load.js';
export { maskedConfig } from './mask.js';
