/** How long past `expires_at` a challenge is kept, to tell a late proof (408) from an unknown one (404). */
export const CHALLENGE_GRACE_MS = 30_000;

/** Algorithms a proof may use (one per key type). */
export const PROOF_ALGS = ['EdDSA', 'ES256', 'ES384', 'PS256'] as const;
