/**
 * Authorizer mode (PROTOCOL.md section 13): a real nginx + njs rendered by
 * `agent-gate nginx-config --mode authorizer` proxying straight to the upstream and asking the
 * real gate (GATE_MODE=authorizer) for a decision on each gated request, held to the contract of
 * test/conformance/contract.ts; only the URL differs from direct mode. The decision cache is
 * off here (`--authz-cache-s 0`), so every case is decided by the gate as in direct mode; the
 * cache, the header screen and what else is particular to this mode are in
 * test/integration/authorizer.test.ts.
 */
import { describeGateContract } from './contract.js';
import { startNginxFrontedGate } from './nginx-fronted.js';

describeGateContract('authorizer', (fx) => startNginxFrontedGate(fx, 'authorizer', 'contract-authz'));
