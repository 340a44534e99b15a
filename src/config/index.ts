/**
 * Configuration: the only module that reads `GATE_*` variables.
 * @module
 */
export { loadConfig, formatViolation, isLoopbackHost } from './load.js';
export type { GateConfig, GateEnv, ConfigViolation, LoadedConfig, LoadOptions, ListenAddress, RateSpec } from './load.js';
export { maskedConfig } from './mask.js';
export { OPTIONS, OPTION_NAMES, PROFILES, defaultFor, type Option, type OptionName } from './options.js';
