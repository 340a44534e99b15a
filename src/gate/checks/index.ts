/**
 * Every check of the decision path by its row name in the tables of pipeline.ts.
 * @module
 */
import type { CheckFactory, LimitRowFactory } from '../deps.js';
import { attestation } from './attestation.js';
import { bearer } from './bearer.js';
import { bodySize } from './body-size.js';
import { challengeBinding } from './challenge-binding.js';
import { challengeBody } from './challenge-body.js';
import { challengeConsume } from './challenge-consume.js';
import { contentTypeJson } from './content-type.js';
import { cooldown } from './cooldown.js';
import { denyList } from './deny-list.js';
import { draining } from './draining.js';
import { forwardedAddress } from './forwarded-address.js';
import { identityDirect } from './identity-direct.js';
import { identityForwarded } from './identity-forwarded.js';
import { jsonShape } from './json-shape.js';
import { limitChallengeAddress } from './limit-challenge-address.js';
import { limitChallengeIdentity } from './limit-challenge-identity.js';
import { limitProxy } from './limit-proxy.js';
import { limitToken } from './limit-token.js';
import { onTime } from './on-time.js';
import { pathPolicy } from './path-policy.js';
import { pow } from './pow.js';
import { proof } from './proof.js';
import { revocation } from './revocation.js';
import { shedding } from './shedding.js';
import { tokenBinding } from './token-binding.js';

/** Row name → check factory. */
export const CHECKS = {
  shedding,
  draining,
  path_policy: pathPolicy,
  identity_direct: identityDirect,
  identity_forwarded: identityForwarded,
  forwarded_address: forwardedAddress,
  revocation,
  deny_list: denyList,
  cooldown,
  limit_challenge_identity: limitChallengeIdentity,
  limit_challenge_address: limitChallengeAddress,
  limit_token: limitToken,
  challenge_body: challengeBody,
  content_type: contentTypeJson,
  body_size: bodySize,
  json_shape: jsonShape,
  challenge_consume: challengeConsume,
  on_time: onTime,
  challenge_binding: challengeBinding,
  pow,
  proof,
  attestation,
  bearer,
  token_binding: tokenBinding,
  limit_proxy: limitProxy,
} satisfies Record<string, CheckFactory | LimitRowFactory>;

/** The name of a row. */
export type CheckName = keyof typeof CHECKS;
