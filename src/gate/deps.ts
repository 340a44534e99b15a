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
import type { GateRateLimits, StepCounter } from '../ratelimit/index.js';
import type { RevocationChecker } from '../revocation/index.js';
import type { GateStore } from '../store/index.js';
import type { TokenService } from '../tokens/index.js';
import type { Check } from './context.js';
import type { FastifyRequest } from 'fastify';

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

/**
 * A row of step 4 that names the counter it spends instead of running itself: consecutive limit
 * rows of a table run as one store step, one round trip, in table order (build.ts).
 */
export interface LimitRow {
  counter(request: FastifyRequest): StepCounter;
  /** Told the share of the limit now in use, once the step passed. */
  after?(request: FastifyRequest, share: number): void;
}

/** Builds one check from the gate's parts; undefined when the configuration turns the row off. */
export type CheckFactory = (deps: GateDeps) => Check | undefined;
/** Builds one limit row from the gate's parts; undefined when rate limits are off. */
export type LimitRowFactory = (deps: GateDeps) => LimitRow | undefined;
