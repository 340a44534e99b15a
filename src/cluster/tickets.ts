/**
 * TLS session-ticket keys (RFC 5077; TLS 1.3 resumption tickets): 48 random bytes that encrypt
 * the session state a returning agent presents to skip the full handshake. Every worker of a
 * gate holds the same key, so a session from one worker resumes on any other, and the key is
 * replaced every `GATE_TLS_TICKET_ROTATE_S` so a stolen key opens only that window's tickets.
 * Node keeps one key: tickets issued under the previous key fall back to a full handshake.
 * @module
 */
import { randomBytes } from 'node:crypto';

/** Length of a Node ticket key (16 bytes name, 16 HMAC, 16 AES). */
export const TICKET_KEY_BYTES = 48;

/** A fresh ticket key. */
export function newTicketKey(): Buffer {
  return randomBytes(TICKET_KEY_BYTES);
}

/** A server that can take ticket keys (a TLS or HTTPS server); plain HTTP has none. */
export interface TicketServer {
  setTicketKeys(keys: Buffer): void;
}

/** The TLS server behind `server`, if it is one. */
export function ticketServer(server: unknown): TicketServer | undefined {
  return typeof (server as Partial<TicketServer>)?.setTicketKeys === 'function' ? (server as TicketServer) : undefined;
}

/**
 * Rotates `apply`'s key now and every `rotateS` seconds (a single-process gate, or the cluster
 * primary broadcasting to its workers); returns a stop function. The timer does not keep the
 * process alive.
 */
export function rotateTicketKeys(rotateS: number, apply: (key: Buffer) => void): { current(): Buffer; stop(): void } {
  let key = newTicketKey();
  apply(key);
  const timer = setInterval(() => {
    key = newTicketKey();
    apply(key);
  }, rotateS * 1000).unref();
  return { current: () => key, stop: () => clearInterval(timer) };
}
