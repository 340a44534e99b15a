/*
 * agent-gate forwarded-header signer for nginx's njs module (PROTOCOL.md section 6).
 *
 * Written for njs 0.7.9 (Debian 12's libnginx-mod-http-js) and later: synchronous
 * crypto.createHmac/createHash only (an async js_set yields nothing), Buffer, and the HMAC
 * key from `js_preload_object agent_gate_fwd_key from <DIR>/gate_fwd_key.json;`, which the
 * master process reads once at configuration load. The module's top-level code runs again in
 * every unprivileged worker, so it must not read the 0600 key file itself.
 *
 * nginx.conf uses it like this (see agent-gate.conf):
 *   js_set $gate_fwd_sig  gate_sign.sign;      computes everything once per request
 *   js_var $gate_fwd_kid; js_var $gate_fwd_ts; ...   the values that were signed
 *   if ($gate_fwd_sig = "") { return 500; }      evaluates the signature in the rewrite
 *                                                phase and fails closed
 *   proxy_set_header x-gate-fwd-ts $gate_fwd_ts; ...
 * Every x-gate-fwd-* header is sent from a js_var written by sign(), so the values sent are
 * the values signed: $msec and $request_id are read exactly once.
 *
 * The canonical string and the signature must stay identical to
 * src/identity/forwarded-canonical.ts; test/vectors/forwarded.json checks both.
 */
var crypto = require('crypto');

var VERSION = 'agent-gate-fwd-v1';
/* Authorizer mode (section 13): a decision request, signed over the original method and URI. */
var AUTHZ_VERSION = 'agent-gate-authz-v1';
var MIN_SECRET_BYTES = 32;
var KID_RE = /^[A-Za-z0-9._-]{1,64}$/;
var TS_RE = /^[0-9]{1,12}$/;
var ID_RE = /^[0-9a-f]{32}$/;
var PEM_RE = /^-----BEGIN CERTIFICATE-----([A-Za-z0-9+\/=\s]+)-----END CERTIFICATE-----\s*$/;

/* The canonical string: the fields joined by "\n", no trailing newline. */
function canonical(f, version) {
    return [version || VERSION, f.kid, f.ts, f.id, f.method, f.requestUri, f.host, f.addr, f.verify, f.thumbprint].join('\n');
}

/* base64url(HMAC-SHA256(secret, text)); secretB64 as in GATE_FWD_HMAC_KEYS. */
function hmac(secretB64, text) {
    if (typeof secretB64 !== 'string' || !/^[A-Za-z0-9+\/_-]+={0,2}$/.test(secretB64)) {
        throw new Error('HMAC secret is not base64');
    }
    var key = Buffer.from(secretB64, 'base64');
    if (key.length < MIN_SECRET_BYTES) {
        throw new Error('HMAC secret is ' + key.length + ' bytes; at least ' + MIN_SECRET_BYTES + ' required');
    }
    return crypto.createHmac('sha256', key).update(text).digest('base64url');
}

/*
 * Thumbprint (base64url SHA-256 of the DER) of the certificate in an x-gate-fwd-cert value:
 * $ssl_client_escaped_cert, URL-encoded PEM; "-" when there is none.
 */
function thumbprintOfHeader(certHeader) {
    if (certHeader === '-') {
        return '-';
    }
    var m = PEM_RE.exec(decodeURIComponent(certHeader));
    if (!m) {
        throw new Error('client certificate is not a PEM certificate');
    }
    var der = Buffer.from(m[1].replace(/\s+/g, ''), 'base64');
    return crypto.createHash('sha256').update(der).digest('base64url');
}

/*
 * js_set $gate_fwd_sig: signs the request and writes the signed values into the js_var
 * variables the x-gate-fwd-* headers are sent from. Returns "" (and logs why) when it
 * cannot sign; the config then refuses the request instead of forwarding it unsigned.
 */
function sign(r) {
    return signAs(r, VERSION, r.method);
}

/*
 * js_set $gate_authz_sig (authorizer mode): the same, for the auth_request subrequest to
 * P/v1/authorize. The subrequest's own method is GET and its URI the endpoint's: what is signed
 * (and sent as x-gate-fwd-method / x-gate-fwd-uri) is the client's request, $request_method
 * (nginx reads it from the main request) and $request_uri (shared with it).
 */
function signAuthz(r) {
    return signAs(r, AUTHZ_VERSION, r.variables.request_method);
}

function signAs(r, version, method) {
    try {
        /* global agent_gate_fwd_key */
        var key = agent_gate_fwd_key;
        if (!key || typeof key.kid !== 'string' || !KID_RE.test(key.kid)) {
            throw new Error('preloaded key has no valid kid');
        }
        var v = r.variables;
        var ts = String(Math.floor(Number(v.msec)));
        var id = v.request_id;
        var cert = v.ssl_client_escaped_cert || '-';
        var f = {
            kid: key.kid,
            ts: ts,
            id: id,
            method: method,
            requestUri: v.request_uri,
            host: v.host,
            addr: v.remote_addr,
            verify: v.ssl_client_verify || 'NONE',
            thumbprint: thumbprintOfHeader(cert)
        };
        if (!TS_RE.test(ts)) {
            throw new Error('bad timestamp ' + ts);
        }
        if (!ID_RE.test(id)) {
            throw new Error('bad request id');
        }
        if (!f.host || !f.addr) {
            throw new Error('no host or address');
        }
        var sig = hmac(key.secret, canonical(f, version));
        v.gate_fwd_kid = f.kid;
        v.gate_fwd_ts = f.ts;
        v.gate_fwd_id = f.id;
        v.gate_fwd_host = f.host;
        v.gate_fwd_addr = f.addr;
        v.gate_fwd_verify = f.verify;
        v.gate_fwd_cert = cert;
        v.gate_fwd_thumbprint = f.thumbprint;
        if (version === AUTHZ_VERSION) {
            v.gate_fwd_method = f.method;
            v.gate_fwd_uri = f.requestUri;
        }
        return sig;
    } catch (e) {
        r.error('agent-gate: cannot sign the forwarded headers, refusing the request: ' + e.message);
        return '';
    }
}

/*
 * js_set $gate_refusal_id: the refusal id of nginx's own problem+json answers, in the
 * gate's format (section 9): 10 base36 digits of Unix milliseconds, then 16 hex digits of
 * $request_id. Unique, time-sortable, [a-z0-9]; also written to the access log.
 */
function refusalId(r) {
    var ms = Math.round(Number(r.variables.msec) * 1000);
    var ts = ms.toString(36);
    while (ts.length < 10) {
        ts = '0' + ts;
    }
    return ts + String(r.variables.request_id).slice(0, 16);
}

/* Header names the gate reserves for itself (section 5): any case, '-' or '_'. */
var RESERVED_RE = /^x[-_](agent|gate)[-_]/i;
/*
 * Connection tokens whose header the rendered config removes or replaces anyway (hop-by-hop,
 * Authorization), so naming them in Connection is harmless and common (Upgrade, TE). Looked up
 * with hasOwn only: a plain object would also "hold" constructor, __proto__, toString, ...
 */
var REMOVED_ANYWAY = ['close', 'keep-alive', 'connection', 'proxy-authenticate', 'proxy-authorization',
    'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host',
    'expect', 'http2-settings', 'authorization'].reduce(function (m, n) {
    m[n] = true;
    return m;
}, Object.create(null));
/* A Connection token that can name a header nginx passes on: letters, digits and '-'. */
var PLAIN_NAME_RE = /^[a-z0-9-]+$/;

function hasOwn(o, k) {
    return Object.prototype.hasOwnProperty.call(o, k);
}

/*
 * js_set $agent_gate_bad_headers (authorizer mode, section 13): "1" when the client sent a
 * header the gate would strip but nginx cannot (it removes only names it is given): a name
 * matching ^x-(agent|gate)- in any case, or a header named in the client's Connection header.
 * nginx then refuses the request (400 request_malformed) before any decision. Names spelled
 * with '_' never get here: `underscores_in_headers off` drops them. Used in one `if` of the
 * gated location only, so it runs once per gated request and nowhere else.
 */
function badHeaders(r) {
    var raw = r.rawHeadersIn;
    var conn = '';
    for (var i = 0; i < raw.length; i++) {
        var name = raw[i][0];
        if (RESERVED_RE.test(name)) {
            return '1';
        }
        if (name.length === 10 && name.toLowerCase() === 'connection') {
            conn += ',' + raw[i][1];
        }
    }
    if (conn !== '') {
        var tokens = conn.toLowerCase().split(',');
        for (var j = 0; j < tokens.length; j++) {
            var t = tokens[j].trim();
            if (t === '' || hasOwn(REMOVED_ANYWAY, t)) {
                continue;
            }
            /*
             * A token that is no plain header name ('__proto__', 'a b') is refused outright:
             * nothing it could name is worth telling apart, and it never reaches a lookup.
             */
            if (!PLAIN_NAME_RE.test(t) || namesHeader(raw, t)) {
                return '1';
            }
        }
    }
    return '';
}

/* Whether the client sent a header named `lower` (compared in any case), from the raw list only. */
function namesHeader(raw, lower) {
    for (var i = 0; i < raw.length; i++) {
        if (raw[i][0].length === lower.length && raw[i][0].toLowerCase() === lower) {
            return true;
        }
    }
    return false;
}

var STATUS_RE = /^[45][0-9][0-9]$/;
var B64URL_RE = /^[A-Za-z0-9_-]+$/;
/* Values nginx took from the gate's answer header; never a CR or LF, but judge them anyway. */
var HEADER_VALUE_RE = /^[\x20-\x7e]{1,512}$/;
var REFUSAL_INSTANCE_RE = /"instance":"urn:agent-gate:refusal:([A-Za-z0-9]{1,64})"/;

/*
 * js_content of @agent_gate_refusal (authorizer mode): the client's answer to a refused
 * request. The gate carried the real outcome in x-agent-gate-* headers (auth_request_set
 * variables); this emits exactly what direct mode sends: the status, the problem+json body,
 * Retry-After, RateLimit-Policy / RateLimit and, on a 401, WWW-Authenticate. With no usable
 * carriers (the gate down, too slow, or answering something else) the answer is 503
 * gate_unavailable with Retry-After, so agents retry.
 */
function refusal(r) {
    var v = r.variables;
    var status = v.agent_gate_status || '';
    var problem = v.agent_gate_problem || '';
    if (!STATUS_RE.test(status) || !B64URL_RE.test(problem) || problem.length > 2048) {
        if (status || problem) {
            r.error('agent-gate: the gate answered the decision request with unusable refusal carriers');
        }
        return gateUnavailable(r);
    }
    var body = Buffer.from(problem, 'base64url');
    var h = r.headersOut;
    h['Content-Type'] = 'application/problem+json';
    h['Cache-Control'] = 'no-store';
    setIf(h, 'Retry-After', v.agent_gate_retry_after);
    setIf(h, 'RateLimit-Policy', v.agent_gate_rl_policy_gate);
    setIf(h, 'RateLimit', v.agent_gate_rl_gate);
    if (status === '401') {
        setIf(h, 'WWW-Authenticate', v.agent_gate_www_auth || 'Bearer realm="agent-gate"');
    }
    // The refusal id as direct mode sends it in X-Agent-Gate-Refusal (the SDK's sign that the
    // gate refused before anything was forwarded).
    var id = REFUSAL_INSTANCE_RE.exec(body.toString());
    if (id) {
        h['X-Agent-Gate-Refusal'] = id[1];
    }
    r.return(Number(status), body);
}

function setIf(h, name, value) {
    if (value && HEADER_VALUE_RE.test(value)) {
        h[name] = value;
    }
}

/*
 * 503 gate_unavailable is answered by the named location @agent_gate_unavailable, whose
 * `keepalive_timeout 0` closes the connection (section 13); njs cannot close it itself.
 */
function gateUnavailable(r) {
    r.internalRedirect('@agent_gate_unavailable');
}

export default { sign, signAuthz, refusal, refusalId, badHeaders, canonical, hmac, thumbprintOfHeader };
