/**
 * Rate limits (PROTOCOL.md section 12) and the batched limiter behind the proxy limit.
 * @module
 */
export { GateRateLimits, counterKey, rateLimited, type RateLimitOptions, type RateSpec, type StepCounter, type StepLimit } from './limits.js';
export { BatchedLimiter, type BatchedLimiterOptions, type TakeResult } from './batched.js';
