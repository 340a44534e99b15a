/**
 * Agent names as the dev PKI accepts them: they become file names and the `urn:agent:` SAN.
 * @module
 */

/** Lowercase, starts alphanumeric, at most 63 characters: safe as a file name and inside a URN. */
export const AGENT_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** True when `name` matches {@link AGENT_NAME_PATTERN}. */
export function isValidAgentName(name: string): boolean {
  return AGENT_NAME_PATTERN.test(name);
}

/** Throws a TypeError naming the rule when `name` is not a valid agent name. */
export function assertAgentName(name: string): void {
  if (!isValidAgentName(name)) {
    throw new TypeError(
      `invalid agent name ${JSON.stringify(name)}: use 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit`,
    );
  }
}
