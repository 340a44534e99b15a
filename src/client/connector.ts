/**
 * The client's TLS connector: undici's, plus the newest session it was sent, held by the client.
 * undici's own session cache holds sessions only weakly, so after a garbage collection a
 * returning agent would pay a full mTLS handshake, and the gate its CPU (load/RESULTS.md,
 * row 2c: a full handshake costs the gate more than a whole token flow).
 * @module
 */
import { TLSSocket } from 'node:tls';
import { buildConnector } from 'undici';

/** A connector for `Pool`'s `connect` option that resumes with the newest session of the connections it made. */
export function sessionKeepingConnector(tls: buildConnector.BuildOptions): buildConnector.connector {
  const base = { ...tls, maxCachedSessions: 0 };
  const connectorFor = (session?: Buffer) => buildConnector(session ? { ...base, session } : base);
  let connector = connectorFor();
  return (options, callback) =>
    connector(options, (...args) => {
      const socket = args[1];
      if (socket instanceof TLSSocket) {
        const remember = (session: Buffer) => {
          connector = connectorFor(session);
        };
        // TLS 1.2 settles its session in the handshake, before this callback; TLS 1.3 sends
        // its tickets after it, each a 'session' event.
        const settled = socket.getProtocol() === 'TLSv1.3' ? undefined : socket.getSession();
        if (settled) remember(settled);
        socket.on('session', remember);
      }
      callback(...args);
    });
}
