# syntax=docker/dockerfile:1
# agent-gate image: `agent-gate serve` as uid 1000, configured by GATE_* variables alone
# (PROTOCOL.md section 12). Used by docker-compose.yml and deploy/k8s.
#
#   docker build -t agent-gate:local .
#   docker run --rm agent-gate:local config check     # any agent-gate command after the image name
#
# Read-only root filesystem friendly: the gate writes nothing at run time (logs go to stdout;
# GATE_AUDIT_FILE, when set, must point into a mounted volume). Mount a tmpfs on /tmp if your
# runtime wants one. The k8s Deployment runs it with readOnlyRootFilesystem: true.

# Pin by digest for reproducible builds, e.g. node:20-bookworm-slim@sha256:...
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: TypeScript -> dist/ (dev dependencies stay in this stage) ----
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && chmod 0755 dist/cli/main.js

# ---- runtime: production dependencies, dist/, the nginx templates ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; then npm itself goes: nothing at run time installs anything.
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts \
 && npm cache clean --force \
 && rm -rf /root/.npm /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
      /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /opt/yarn-* /usr/local/bin/yarn /usr/local/bin/yarnpkg
COPY --from=build /src/dist ./dist
# `agent-gate nginx-config` renders from these templates (dist/nginx/render.js reads ../../nginx/).
COPY nginx ./nginx
# The HEALTHCHECK below and the compose stack's one-shot PKI service (docker-compose.yml).
COPY deploy/compose/healthcheck.mjs deploy/compose/pki-init.sh deploy/compose/pki-helper.mjs ./deploy/compose/
# `agent-gate` on PATH; `node` is there already (the k8s init container runs `node -e`).
# /var/lib/agent-gate/*: mount points owned by uid 1000, so that an empty named volume mounted
# there starts with that ownership (docker copies it) and the non-root PKI service can write it.
RUN ln -s /app/dist/cli/main.js /usr/local/bin/agent-gate \
 && mkdir -p /var/lib/agent-gate/pki /var/lib/agent-gate/secrets /var/lib/agent-gate/nginx \
 && chown 1000:1000 /var/lib/agent-gate/pki /var/lib/agent-gate/secrets /var/lib/agent-gate/nginx \
 && chmod 0700 /var/lib/agent-gate/pki /var/lib/agent-gate/secrets \
 && chmod 0755 /var/lib/agent-gate/nginx

# The base image's `node` user: uid 1000, gid 1000 (numeric, so runAsNonRoot can verify it).
USER 1000:1000

# GATE_LISTEN and GATE_ADMIN_LISTEN defaults.
EXPOSE 8443 9464

# Liveness: GET /healthz on the admin listener (deploy/compose/healthcheck.mjs explains the
# variables it follows). Kubernetes ignores HEALTHCHECK and uses its own probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "/app/deploy/compose/healthcheck.mjs"]

# V8 sizes its heap from the machine, not the container, and collects the old generation late:
# under sustained new-connection load a gate on node's defaults peaked at 191-207 MB of RSS
# before its first full GC, against 135 MB with this bound, at the same CPU per flow
# (load/bench/rss.ts, load/RESULTS.md). It bounds each process (the primary and every worker
# inherit it), not the container: size the memory limit as HARDENING.md says. Override
# NODE_OPTIONS to change it (the Kubernetes manifests set the same value).
ENV NODE_OPTIONS=--max-old-space-size=384

# One TLS 1.3 session ticket per full handshake instead of two: 4-5 % less gate CPU per agent
# flow over a new connection (the file says why and how to combine it with a config of yours).
# Copied as root's (no --chown): the gate's user must not be able to rewrite it.
COPY deploy/node-openssl.cnf ./deploy/
ENV OPENSSL_CONF=/app/deploy/node-openssl.cnf

# SIGTERM drains (readyz 503, in-flight requests finish within GATE_DRAIN_TIMEOUT_MS, exit 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["agent-gate"]
CMD ["serve"]
