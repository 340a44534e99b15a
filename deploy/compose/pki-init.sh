#!/bin/sh
# The one-shot `pki-init` service of docker-compose.yml (deploy/compose/README.md). Runs in the
# agent-gate image as uid 1000 before anything else starts, and again on every `up`: each step
# keeps what is already there and current, so the CA (and every agent it issued) survives.
#
#   1. dev/staging CA (`agent-gate pki init`), with the OCSP responder URL (AIA) that every
#      agent certificate issued from then on carries;
#   2. server certificates for the compose names: gate.{crt,key} (gate, gate1, gate2, gate-authz) for the
#      gates, nginx.{crt,key} (nginx, nginx-authz, localhost, 127.0.0.1, ::1) for nginx;
#   3. agent certificates (P-256, PKCS#8 keys, as k6 needs): demo and load-1 by default;
#   4. a fresh CRL (ca.crl, the gates' GATE_CRL_FILES fallback when OCSP cannot answer);
#   5. the token-signing key both gates share (`agent-gate keygen --out`, 0600);
#   6. the nginx configuration (`agent-gate nginx-config`): nginx.conf, the njs signer and the
#      0600 copy of the forwarded-header HMAC key, with the gates as an https upstream verified
#      against the CA and the name `gate`;
#   7. the authorizer topology's nginx configuration (`nginx-config --mode authorizer`, the
#      `authorizer` compose profile) in NGINX_AUTHZ_DIR: nginx proxies to the upstream itself
#      and asks the authorizer gate (`gate-authz`) for decisions. Rendered on every run, used
#      only when that profile is up.
#
# Every path and name can be overridden through the environment (the test suite runs this
# script outside a container that way); the defaults are the container's.
set -eu

PKI_DIR=${PKI_DIR:-/var/lib/agent-gate/pki}
SECRETS_DIR=${SECRETS_DIR:-/var/lib/agent-gate/secrets}
NGINX_DIR=${NGINX_DIR:-/var/lib/agent-gate/nginx}
# Commands, word-split on purpose: in tests AGENT_GATE is `node --enable-source-maps <bundle>`
# (the test run's esbuild bundle of src/cli/main.ts, test/setup/cli-bundle.ts).
AGENT_GATE=${AGENT_GATE:-agent-gate}
NODE=${NODE:-node}
HELPER=${HELPER:-$(dirname "$0")/pki-helper.mjs}

OCSP_URL=${OCSP_URL:-http://ocsp:8080}
NGINX_GATE_URL=${NGINX_GATE_URL:-https://gate:8443}
NGINX_GATE_TLS_NAME=${NGINX_GATE_TLS_NAME:-gate}
CERT_NAMES_GATE=${CERT_NAMES_GATE:-gate,gate1,gate2,localhost,127.0.0.1}
CERT_NAMES_NGINX=${CERT_NAMES_NGINX:-nginx,nginx-authz,localhost,127.0.0.1,::1}
NGINX_LISTEN=${NGINX_LISTEN:-0.0.0.0:8443}
NGINX_AUTHZ_DIR=${NGINX_AUTHZ_DIR:-$NGINX_DIR/authorizer}
NGINX_AUTHZ_LISTEN=${NGINX_AUTHZ_LISTEN:-$NGINX_LISTEN}
NGINX_AUTHZ_GATE_URL=${NGINX_AUTHZ_GATE_URL:-https://gate-authz:8443}
NGINX_AUTHZ_UPSTREAM_URL=${NGINX_AUTHZ_UPSTREAM_URL:-http://upstream:8080}
AUTHZ_CACHE_S=${AUTHZ_CACHE_S:-2}
AUTHZ_RATE_PROXY_IDENTITY=${AUTHZ_RATE_PROXY_IDENTITY:-1000/1}
PATH_PREFIX=${PATH_PREFIX:-/.agent-gate}
AGENTS=${AGENTS:-demo load-1}
AGENT_DAYS=${AGENT_DAYS:-30}
CRL_DAYS=${CRL_DAYS:-7}
FWD_HMAC_KID=${FWD_HMAC_KID:-compose-1}
: "${FWD_HMAC_SECRET:?must be set: base64 of at least 32 random bytes, the same value the gates get in GATE_FWD_HMAC_KEYS (deploy/compose/README.md)}"

umask 077
say() { printf 'pki-init: %s\n' "$*" >&2; }

mkdir -p "$NGINX_AUTHZ_DIR" 2>/dev/null || true
for d in "$PKI_DIR" "$SECRETS_DIR" "$NGINX_DIR" "$NGINX_AUTHZ_DIR"; do
  mkdir -p "$d" 2>/dev/null || true
  if [ ! -d "$d" ] || [ ! -w "$d" ]; then
    say "$d is not a directory writable by uid $(id -u): the named volume must start empty (docker then gives it the image's ownership, uid 1000) or be chowned to 1000"
    exit 1
  fi
done

say "1/7 CA in $PKI_DIR (OCSP responder $OCSP_URL)"
$AGENT_GATE pki init --dir "$PKI_DIR" --alg ec-p256 --ocsp-url "$OCSP_URL" >/dev/null

say "2/7 server certificates: gate ($CERT_NAMES_GATE), nginx ($CERT_NAMES_NGINX)"
$NODE "$HELPER" server-cert "$PKI_DIR" gate "$CERT_NAMES_GATE" >/dev/null
$NODE "$HELPER" server-cert "$PKI_DIR" nginx "$CERT_NAMES_NGINX" >/dev/null

say "3/7 agent certificates: $AGENTS"
for agent in $AGENTS; do
  if $NODE "$HELPER" fresh "$PKI_DIR" "$PKI_DIR/agents/$agent.crt" "$PKI_DIR/agents/$agent.key"; then
    say "    $agent: current"
  else
    $AGENT_GATE pki issue "$agent" --dir "$PKI_DIR" --alg ec-p256 --days "$AGENT_DAYS" >/dev/null
    say "    $agent: issued for $AGENT_DAYS days"
  fi
done

say "4/7 CRL (next update in $CRL_DAYS days)"
$AGENT_GATE pki crl --dir "$PKI_DIR" --days "$CRL_DAYS" >/dev/null

say "5/7 token-signing key"
if [ -s "$SECRETS_DIR/signing.jwk" ]; then
  say "    $SECRETS_DIR/signing.jwk: kept"
else
  rm -f "$SECRETS_DIR/signing.jwk"
  $AGENT_GATE keygen --out "$SECRETS_DIR/signing.jwk" 2>/dev/null
  say "    $SECRETS_DIR/signing.jwk: generated"
fi

say "6/7 nginx configuration in $NGINX_DIR (gates at $NGINX_GATE_URL, kid $FWD_HMAC_KID)"
key_file=$(mktemp "${TMPDIR:-/tmp}/fwd-hmac.XXXXXX")
trap 'rm -f "$key_file"' EXIT
printf '%s\n' "$FWD_HMAC_SECRET" >"$key_file"
# render_nginx DIR ARGS...: nginx-config into DIR with the PKI, key and prefix both nginx
# configurations share, then ARGS. Its warnings (there should be none: the authorizer's
# upstream is plain HTTP on the internal network, and that is expected) go to stderr; the line
# saying how nginx is run does not.
render_nginx() {
  dir=$1
  shift
  $AGENT_GATE nginx-config "$@" \
    --gate-ca "$PKI_DIR/ca.crt" \
    --gate-tls-name "$NGINX_GATE_TLS_NAME" \
    --tls-cert "$PKI_DIR/nginx.crt" \
    --tls-key "$PKI_DIR/nginx.key" \
    --client-ca "$PKI_DIR/ca.crt" \
    --hmac-key-file "$key_file" \
    --kid "$FWD_HMAC_KID" \
    --path-prefix "$PATH_PREFIX" \
    --dir "$dir" >/dev/null 2>"$dir/render.log" || {
    cat "$dir/render.log" >&2
    exit 1
  }
  grep -v '^run: ' "$dir/render.log" >&2 || true
  rm -f "$dir/render.log"
}
render_nginx "$NGINX_DIR" --listen "$NGINX_LISTEN" --gate-url "$NGINX_GATE_URL"

say "7/7 authorizer nginx configuration in $NGINX_AUTHZ_DIR (gate $NGINX_AUTHZ_GATE_URL, upstream $NGINX_AUTHZ_UPSTREAM_URL, decision cache ${AUTHZ_CACHE_S} s)"
render_nginx "$NGINX_AUTHZ_DIR" \
  --mode authorizer \
  --listen "$NGINX_AUTHZ_LISTEN" \
  --gate-url "$NGINX_AUTHZ_GATE_URL" \
  --upstream-url "$NGINX_AUTHZ_UPSTREAM_URL" \
  --authz-cache-s "$AUTHZ_CACHE_S" \
  --rate-proxy-identity "$AUTHZ_RATE_PROXY_IDENTITY"

say "done"
