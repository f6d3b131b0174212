# Sourced by deploy/*.sh: where the deployment lives and how to run Compose.
#   CELLKV_DEPLOY_DIR      the deployment directory [deploy/run]
#   CELLKV_DEPLOY_PROJECT  the Compose project [cellkv]
#   CELLKV_IMAGE           the image [cellkv:dev]
#   CELLKV_PROMETHEUS_IMAGE  Prometheus's image [cellkv-prometheus:dev]
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cellkv-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
deploy_dir="${CELLKV_DEPLOY_DIR:-$repo/deploy/run}"
project="${CELLKV_DEPLOY_PROJECT:-cellkv}"
image="${CELLKV_IMAGE:-cellkv:dev}"
prometheus_image="${CELLKV_PROMETHEUS_IMAGE:-cellkv-prometheus:dev}"
release="$CARGO_TARGET_DIR/release"

# Compose v2 (`docker compose`) or v1 (`docker-compose`), whichever is here.
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose_cmd=(docker-compose)
else
    echo "deploy: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
fi

# compose.json (cellkv-deploy's) and, once deploy/monitoring.py wrote it,
# compose.monitoring.json (Prometheus) as a second Compose file.
compose() {
    local files=(--file "$deploy_dir/compose.json")
    [ ! -f "$deploy_dir/compose.monitoring.json" ] ||
        files+=(--file "$deploy_dir/compose.monitoring.json")
    "${compose_cmd[@]}" --project-name "$project" "${files[@]}" "$@"
}
