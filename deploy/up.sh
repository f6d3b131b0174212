#!/usr/bin/env bash
# Brings up the Compose deployment of cellkv with one command: 3 data cells ×
# 3 replicas, the control cell (3 replicas), cellkv-control and two routers,
# one container each, and Prometheus scraping them all. Builds the images if
# they are missing (or CELLKV_BUILD=1),
# writes the deployment directory (kept: the same ports, secrets and data
# next time), starts the containers, initializes every cell from inside the
# network, waits until the routers serve every cell, writes deployment.json
# and prints the endpoints. deploy/down.sh stops it; up again brings it back.
#
#   deploy/up.sh
#   CELLKV_DEPLOY_DIR=/tmp/d CELLKV_DEPLOY_PROJECT=mine deploy/up.sh
#   deploy/up.sh --router-ports 8080,8081 --control-port 7900   (a new directory only)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ "${CELLKV_BUILD:-0}" = 1 ] || ! docker image inspect "$image" >/dev/null 2>&1; then
    CELLKV_IMAGE="$image" "$repo/deploy/build-image.sh"
elif [ ! -x "$release/cellkv-deploy" ]; then
    cargo build --release -p cellkv-cluster --bin cellkv-deploy
fi

if [ "${CELLKV_BUILD:-0}" = 1 ] || ! docker image inspect "$prometheus_image" >/dev/null 2>&1; then
    CELLKV_PROMETHEUS_IMAGE="$prometheus_image" "$repo/deploy/build-prometheus-image.sh"
fi

"$release/cellkv-deploy" generate --dir "$deploy_dir" --project "$project" --image "$image" "$@"
# Prometheus, scraping every process: a second Compose file beside compose.json.
python3 "$repo/deploy/monitoring.py" --dir "$deploy_dir" --image "$prometheus_image"
echo "== starting the containers (project $project)"
compose up --detach --remove-orphans
echo "== bootstrapping the cells from inside the network"
if ! compose run --rm bootstrap; then
    echo "deploy: the bootstrap failed; the last log lines of every container:" >&2
    compose logs --tail 20 >&2 || true
    exit 1
fi
"$release/cellkv-deploy" ready --dir "$deploy_dir"
prometheus_url="$(sed -n 's/.*"prometheus_url": "\(.*\)".*/\1/p' "$deploy_dir/monitoring.json")"
echo "Prometheus: $prometheus_url (every process's /metrics, every ${CELLKV_SCRAPE_INTERVAL:-2s});"
echo "  dashboard for Grafana: $repo/deploy/grafana/cellkv.json (docs/observability.md)"
