/**
 * What the checks of the decision path are built from: the capabilities a gate was assembled
 * with (services.ts builds them; a test can hand in its own).
 * @module
 */
import type { AttestationRegistry } from '../attestation/index.js';
import type { GateConfig } from '../config/index.js';
import type { LoadShedder } from '../http/shedding.js';
import type { DirectIdentityResolver, ForwardedVerifier } from '../identity/index.js';
import type { GateMetrics } from '../metrics/index.js';
import type { DenyList } from '../operator/index.js';
import type { GateRateLimits } from '../ratelimit/index.js';
import type { RevocationChecker } from '../revocation/index.js';
import type { GateStore } from '../store/index.js';
import type { TokenService } from '../tokens/index.js';
import type { Check } from './context.js';

/** The parts the checks use. */
export interface GateDeps {
  config: GateConfig;
  now: () => number;
  metrics: GateMetrics;
  store: GateStore;
  tokens: TokenService;
  /** The identity source's own object: direct-mode resolver or forwarded-mode verifier. */
  identity: { direct?: DirectIdentityResolver; forwarded?: ForwardedVerifier };
  revocation: RevocationChecker;
  /** The deny list's local copy (section 2). */
  denyList: DenyList;
  limits: GateRateLimits | undefined;
  attestation: AttestationRegistry | undefined;
  shedder: LoadShedder;
  /** Mutable run state: draining after SIGTERM. */
  state: { draining: boolean };
}

/** Builds one check from the gate's parts; undefined when the configuration turns the row off. */
export type CheckFactory = (deps: GateDeps) => Check | undefined;
