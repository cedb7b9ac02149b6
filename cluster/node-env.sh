# Environment for every node of a `ray up` cluster (cluster/aws-gpu.yaml, cluster/gcp-gpu.yaml).
# Sourced before `ray start` and from ~/.bashrc, so the Ray processes, the Serve replicas they
# spawn and interactive shells (`ray attach`, `ray exec`) all see the same settings.
#
# The secrets live in ~/.stemcell/cluster-secrets, synced from your machine by file_mounts;
# they are never written into a cluster YAML or a runtime_env. See docs/deploy.md.
STEMCELL_SECRETS_DIR="$HOME/.stemcell/cluster-secrets"

# Ray token authentication: every Ray process on every node must agree on the mode and the
# token. RAY_AUTH_MODE=token with an unreadable token file makes `ray start` fail (fail closed).
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH="$STEMCELL_SECRETS_DIR/ray_auth_token"

# Bearer token of Stemcell's admin HTTP routes (read by the Serve app).
if [ -r "$STEMCELL_SECRETS_DIR/admin_token" ]; then
    STEMCELL_ADMIN_TOKEN="$(cat "$STEMCELL_SECRETS_DIR/admin_token")"
    export STEMCELL_ADMIN_TOKEN
fi

# Serve's HAProxy ingress (`http.ingress: haproxy` in configs/serve.yaml, the default): read when the Serve
# controller and each replica start, so every node needs it; HAProxy's readiness gets 30 s (docs/deploy.md 8).
export RAY_SERVE_ENABLE_HA_PROXY=1
export RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=30
