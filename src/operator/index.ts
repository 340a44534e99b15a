/**
 * Operator state shared by every gate through the store: the deny list, the registry of
 * failed-proof cooldowns, and recent refusals by id (for appeals).
 * @module
 */
export { DenyList, isLive, type DenyEntry, type DenyListOptions } from './deny-list.js';
export { CooldownRegistry, type CooldownEntry } from './cooldowns.js';
export { RefusalRecords, REFUSAL_RETENTION_MS, REFUSAL_RECORDS_PER_IDENTITY, REFUSAL_RECORDS_MAX, ANONYMOUS_PER_S, type RefusalRecord, type RefusalRecordsOptions } from './refusals.js';
