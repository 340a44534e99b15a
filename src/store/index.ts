/**
 * Challenge and replay state: one interface, a Redis and an in-memory implementation.
 * @module
 */
export type { GateStore, ChallengeRecord, ConsumeResult } from './types.js';
export type { RecordOps } from './records.js';
export { MemoryStore } from './memory.js';
export { RedisStore, type RedisStoreOptions } from './redis.js';
export { MemoryWindows, type StepOutcome, type WindowOp } from './windows.js';
