/**
 * `Expect: 100-continue` after the checks (PROTOCOL.md section 5): Node answers `100 Continue`
 * as soon as the headers arrive unless the server has a `checkContinue` listener. With the
 * listener below, a request goes through the normal handler and `100 Continue` is written only
 * when something starts reading its body, which every route does after its identity, token,
 * limit, media-type and length checks; a request refused before that gets its refusal with no
 * `100` first (and Node then closes the connection, since the client may never send the body).
 * @module
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';

type Readish = IncomingMessage & { _read(n: number): void };

/** Defers `100 Continue` on `server` until the request body is first read. */
export function deferContinue(server: Pick<Server, 'on' | 'emit' | 'listenerCount'>): void {
  // A host application that handles Expect itself keeps its own listener.
  if (server.listenerCount('checkContinue') > 0) return;
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    continueOnFirstRead(req, res);
    server.emit('request', req, res);
  });
  // Any other expectation is ignored (RFC 9110 section 10.1.1 allows it; `Expect` never reaches
  // the upstream): the request goes through the checks like any other instead of getting
  // Node's bare 417 before identity.
  if (server.listenerCount('checkExpectation') === 0) server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => server.emit('request', req, res));
}

/** Writes `100 Continue` on the first read of `req`'s body, unless an answer has begun. */
export function continueOnFirstRead(req: IncomingMessage, res: ServerResponse): void {
  const r = req as Readish;
  const read = r._read;
  r._read = function readAfterContinue(this: Readish, n: number) {
    r._read = read;
    // After a refusal Node discards ("dumps") the unread body through this same path: a 100
    // then would follow the final answer on the wire.
    if (!res.headersSent && !res.writableEnded && !res.destroyed) res.writeContinue();
    read.call(this, n);
  };
}
