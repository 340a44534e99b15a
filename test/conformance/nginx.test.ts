/**
 * The nginx-fronted gate: a real nginx + njs (the configuration `agent-gate nginx-config`
 * renders) in front of the real gate in forwarded mode, against a real redis-server, held to
 * the contract of test/conformance/contract.ts; only the URL differs from direct mode. What
 * is particular to forwarded mode (spoofing, key rotation, reloads) is in
 * test/integration/nginx-gate.test.ts.
 */
import { describeGateContract } from './contract.js';
import { startNginxFrontedGate } from './nginx-fronted.js';

describeGateContract('nginx', (fx) => startNginxFrontedGate(fx, 'forwarded', 'contract'));
