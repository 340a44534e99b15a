/**
 * The one place where errors become responses: problem+json (RFC 9457) with a refusal id
 * that also goes to the log line. Details stay in logs; clients get the code and title only.
 * @module
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { GateError, isGateError, newRefusalId, problemFor, REFUSAL_HEADER, wwwAuthenticateFor, type ErrorCode } from '../errors.js';
import type { AuditSink } from '../audit/index.js';
import { GATE_BODY_LIMIT } from './body.js';
import type { GateMetrics } from '../metrics/index.js';

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'request_malformed',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'request_malformed',
  FST_ERR_CTP_INVALID_JSON_BODY: 'request_malformed',
  FST_ERR_BAD_URL: 'request_malformed',
  FST_ERR_VALIDATION: 'request_malformed',
  FST_ERR_NOT_FOUND: 'not_found',
  // QUERY without Content-Type (RFC 10008 makes the server refuse it); checked after the guard.
  FST_ERR_ROUTE_MISSING_CONTENT_TYPE: 'request_malformed',
};

/** Log event names for refusals that are security events (the rest log as `refusal`). */
const SECURITY_EVENT: Partial<Record<ErrorCode, string>> = {
  challenge_replayed: 'security.replay',
  challenge_binding_mismatch: 'security.binding_mismatch',
  token_binding_mismatch: 'security.binding_mismatch',
  client_cert_revoked: 'security.revoked',
  forwarded_signature_invalid: 'security.forwarded_signature',
  rate_limited: 'security.rate_limited',
  agent_denied: 'security.denied',
  proof_invalid: 'security.proof_invalid',
  pow_invalid: 'security.proof_invalid',
};

/** The log event name of a refusal. */
export function refusalEvent(err: GateError): string {
  // A failed-proof cooldown is its own event: it is what an appeal is usually about.
  if (err.reason === 'failed_proof_cooldown') return 'security.cooldown';
  return SECURITY_EVENT[err.code] ?? 'refusal';
}

/** Maps anything thrown to a GateError, or undefined when it is an internal fault. */
export function toGateError(err: unknown): GateError | undefined {
  if (isGateError(err)) return err;
  const code = (err as FastifyError | undefined)?.code;
  const mapped = code ? FASTIFY_CODES[code] : undefined;
  return mapped ? new GateError(mapped, { cause: err }) : undefined;
}

/**
 * The refusal to answer for anything thrown: its GateError, or 500 `internal_error` for an
 * internal fault (never a guess such as `store_unavailable`; the cause is logged, not echoed).
 */
export function toRefusal(err: unknown): GateError {
  return toGateError(err) ?? new GateError('internal_error', { cause: err, detail: (err as Error | undefined)?.message });
}

/** Where refusals are reported besides the response: metrics and, when configured, the audit trail. */
export interface RefusalSinks {
  metrics: GateMetrics;
  audit?: AuditSink;
  /** Keeps refusals for lookup by id (admin API). */
  refusals?: { record(r: { refusal_id: string; code: string; status: number; at: number; agent_id?: string; thumbprint?: string; method?: string }): void };
  /**
   * The per-identity refusal limit (`GATE_RATE_REFUSAL_IDENTITY`): counts one refusal of the
   * certificate and returns the 429 to answer instead once it is over the limit.
   */
  limitRefusal?: (thumbprint: string) => GateError | undefined;
}

/**
 * Sends the problem+json answer for `refusal`, logging (and auditing) it with its refusal id.
 * A client-caused refusal (4xx other than 429) of an identified agent first counts against
 * the per-identity refusal limit; over it, the agent gets that 429 instead and no record is
 * kept, so an agent hammering refusals cannot grow the store.
 */
export function sendRefusal(request: FastifyRequest, reply: FastifyReply, refusal: GateError, sinks: RefusalSinks): FastifyReply {
  const { metrics } = sinks;
  const limited = request.agent && sinks.limitRefusal && refusal.status >= 400 && refusal.status < 500 && refusal.status !== 429 ? sinks.limitRefusal(request.agent.thumbprint) : undefined;
  const err = limited ?? refusal;
  const id = newRefusalId();
  const status = err.status;
  request.refusedWith = err.code;
  metrics.errors.inc({ code: err.code });
  const log = {
    event: refusalEvent(err),
    code: err.code,
    status,
    refusal_id: id,
    // Over the refusal limit, the trail still says what the agent was refused for.
    detail: limited ? `${err.detail ?? ''}; in place of ${refusal.code}` : err.detail,
    agent_id: request.agent?.agentId,
    thumbprint: request.agent?.thumbprint,
  };
  // An internal fault is logged with its stack (the client gets only the code and the id).
  if (err.code === 'internal_error') request.log.error({ ...log, err: err.cause }, 'internal error');
  else if (status >= 500) request.log.warn(log, 'refused');
  else request.log.info(log, 'refused');
  // The refusal id is what an agent's owner quotes in an appeal: it must be in the trail.
  sinks.audit?.record({ ...log, method: request.method, client_address: request.clientAddress });
  sinks.refusals?.record({ refusal_id: id, code: err.code, status, at: Date.now(), agent_id: request.agent?.agentId, thumbprint: request.agent?.thumbprint, method: request.method });
  reply.code(status).headers({ ...err.headers, 'cache-control': 'no-store', 'content-type': 'application/problem+json', [REFUSAL_HEADER]: id });
  // A body still on its way would otherwise be read and discarded to keep the connection: a
  // refused client must not make the gate take in its upload. Small bodies (up to the gate
  // endpoints' limit) are let through, so that an agent keeps its connection after a refusal.
  if (!request.raw.complete && (request.headers['transfer-encoding'] !== undefined || Number(request.headers['content-length'] ?? 0) > GATE_BODY_LIMIT)) reply.header('connection', 'close');
  if (status === 401) reply.header('www-authenticate', wwwAuthenticateFor(err.code));
  // A Buffer keeps fastify from appending `; charset=utf-8` to the problem media type.
  return reply.send(Buffer.from(JSON.stringify(problemFor(err.code, status, id))));
}

/** The fastify error handler for both listeners. */
export function makeErrorHandler(sinks: RefusalSinks) {
  return function gateErrorHandler(this: unknown, err: unknown, request: FastifyRequest, reply: FastifyReply) {
    return sendRefusal(request, reply, toRefusal(err), sinks);
  };
}

/** How long a 400 from the client-error handler may take to reach a client that does not read. */
const CLIENT_ERROR_LINGER_MS = 2000;

/**
 * fastify's `clientErrorHandler`: requests Node's HTTP parser refuses (bad request line,
 * control bytes, headers over the size limit) still get the contract's 400 problem+json.
 * Anything else is not an HTTP request to answer and the socket is destroyed: a TLS error or
 * handshake timeout comes from a connection whose handshake never completed (a 400 written into
 * it would wait for that handshake forever, holding the connection open), a header or request
 * timeout from a client too slow to wait for, a reset from a client that is gone.
 */
export function makeClientErrorHandler(sinks: RefusalSinks, log: () => { info(o: object, msg: string): void } | undefined) {
  return function clientErrorHandler(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex): void {
    const code = err.code ?? '';
    if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') sinks.metrics.connectionTimeouts.inc({ phase: 'handshake' });
    else if (code === 'ERR_HTTP_REQUEST_TIMEOUT') sinks.metrics.connectionTimeouts.inc({ phase: 'request' });
    // Only the HTTP parser (HPE_*) sees decrypted bytes, so only its errors follow a completed handshake.
    if (socket.destroyed || !code.startsWith('HPE_') || !socket.writable) {
      socket.destroy();
      return;
    }
    answerOnSocket(socket, new GateError('request_malformed', { detail: `HTTP parser: ${code}` }), sinks, log);
  };
}

/**
 * The server's `connect` listener: the gate tunnels nothing, so `CONNECT` gets 405 (step 2,
 * before identity) with the methods a gated path takes, instead of Node's silent close.
 */
export function makeConnectHandler(sinks: RefusalSinks, log: () => { info(o: object, msg: string): void } | undefined, allow: string) {
  return function connectHandler(_req: unknown, socket: import('node:stream').Duplex): void {
    if (socket.destroyed || !socket.writable) return void socket.destroy();
    answerOnSocket(socket, new GateError('method_not_allowed', { detail: 'CONNECT', headers: { allow } }), sinks, log);
  };
}

/**
 * Writes `err` as a problem+json answer straight on `socket` (no request object exists, or the
 * parser gave up on it) and closes the connection.
 */
function answerOnSocket(socket: import('node:stream').Duplex, err: GateError, sinks: RefusalSinks, log: () => { info(o: object, msg: string): void } | undefined): void {
  const id = newRefusalId();
  const status = err.status;
  sinks.metrics.errors.inc({ code: err.code });
  log()?.info({ event: 'refusal', code: err.code, status, refusal_id: id, detail: err.detail }, 'refused');
  const body = JSON.stringify(problemFor(err.code, status, id));
  const extra = Object.entries(err.headers ?? {}).map(([k, v]) => `${k}: ${String(v)}\r\n`).join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/problem+json\r\ncache-control: no-store\r\n${REFUSAL_HEADER}: ${id}\r\n${extra}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  // end() closes only our side: a client that neither reads nor closes must not keep the socket.
  const linger = setTimeout(() => socket.destroy(), CLIENT_ERROR_LINGER_MS);
  linger.unref();
  socket.once('close', () => clearTimeout(linger));
}
