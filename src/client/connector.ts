/**
 * The client's TLS connector: undici's, plus the newest session of each server it connected to,
 * held by the client. undici's own session cache holds sessions only weakly, so after a garbage
 * collection a returning agent would pay a full mTLS handshake, and the gate its CPU
 * (load/RESULTS.md: a resumed connection's flow costs the gate about two thirds of a full one's).
 * @module
 */
import { TLSSocket } from 'node:tls';
import { buildConnector } from 'undici';

/** Servers whose sessions are kept (one origin per GateClient needs one). */
const MAX_SERVERS = 16;

/**
 * A connector for `Pool`'s `connect` option that resumes with the newest session of the
 * connections it made to the same server name and port. A session is remembered only from a
 * connection that completed its handshake (chain verified, `checkServerIdentity` passed): Node
 * emits `session` after `secureConnect`, and the listener is added only then.
 */
export function sessionKeepingConnector(tls: buildConnector.BuildOptions): buildConnector.connector {
  const base = { ...tls, maxCachedSessions: 0 };
  const fresh = buildConnector(base);
  const servername = 'servername' in tls ? tls.servername : undefined;
  // By server (name and port, as undici keys its own cache): a connector that resumes its newest session.
  const resuming = new Map<string, buildConnector.connector>();
  return (options, callback) => {
    const key = `${options.servername || servername || options.hostname}:${options.port}`;
    return (resuming.get(key) ?? fresh)(options, (...args) => {
      const socket = args[1];
      if (socket instanceof TLSSocket) {
        socket.on('session', (session: Buffer) => {
          resuming.delete(key);
          if (resuming.size >= MAX_SERVERS) resuming.delete(resuming.keys().next().value!);
          resuming.set(key, buildConnector({ ...base, session }));
        });
      }
      callback(...args);
    });
  };
}
