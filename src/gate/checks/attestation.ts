/**
 * Step 11 (section 8): the attestation when present or required. Without a registry none can
 * be trusted: a presented one is refused (fail closed, never ignored).
 */
import { checkAttestation } from '../../attestation/index.js';
import { GateError } from '../../errors.js';
import type { CheckFactory } from '../deps.js';
import { agentOf } from '../context.js';

export const attestation: CheckFactory = ({ attestation: registry, config, now }) => {
  const required = config.attestation.required;
  if (!registry && required === undefined) {
    return (request) => {
      if (request.exchange!.attestation !== undefined) throw new GateError('attestation_invalid', { detail: 'no attestation issuers are configured' });
    };
  }
  return async (request) => {
    const exchange = request.exchange!;
    const rec = exchange.record!;
    exchange.att = await checkAttestation(registry, required, exchange.attestation, { nonce: rec.nonce, thumbprint: agentOf(request).thumbprint, skewS: config.maxSkewS, nowMs: now() });
  };
};
