#!/usr/bin/env bash
# Whole-deployment test of the Compose deployment: builds the images
# (deploy/build-image.sh, deploy/build-prometheus-image.sh), brings a
# deployment up in a fresh directory under its own Compose project
# (deploy/up.sh), PUTs and GETs an object through each router, runs faults
# under load and an operator's add, drain and replace (tests/compose-ops.sh),
# then starts a migration (a drain at 1 byte/s, so it stays in progress) and
# checks that Prometheus scrapes every process, the new members included,
# and has a series of every metric the Grafana dashboard uses
# (deploy/grafana/check_metrics.py), cancels it, and takes the deployment
# down with its volumes (`compose down -v`). Needs Docker with Compose.
# Fails if it takes longer than CELLKV_COMPOSE_TEST_TIMEOUT seconds [600].
set -euo pipefail
cd "$(dirname "$0")/.."

export CELLKV_DEPLOY_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cellkv-compose-test-XXXXXX")"
export CELLKV_DEPLOY_PROJECT="cellkv-test-$$"
. deploy/lib.sh
limit="${CELLKV_COMPOSE_TEST_TIMEOUT:-600}"
start=$SECONDS

cleanup() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -f "$deploy_dir/compose.json" ]; then
        echo "compose test: FAILED; the last log lines of every container:" >&2
        compose logs --tail 30 >&2 || true
    fi
    if [ -f "$deploy_dir/compose.json" ]; then
        compose --profile tools down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1 || true
    fi
    rm -rf "$deploy_dir"
    exit "$status"
}
trap cleanup EXIT

echo "== compose test: images"
deploy/build-image.sh
deploy/build-prometheus-image.sh
echo "== compose test: up (project $project in $deploy_dir)"
timeout "$limit" deploy/up.sh

token="$(sed -n 's/.*"token": "\(.*\)".*/\1/p' "$deploy_dir/deployment.json" | head -1)"
routers="$(sed -n '/"routers": \[/,/\]/s/.*"\(http[^"]*\)".*/\1/p' "$deploy_dir/deployment.json")"
[ -n "$token" ] && [ "$(echo "$routers" | wc -l)" -eq 2 ] || {
    echo "compose test: deployment.json names no token or not 2 routers" >&2
    exit 1
}
auth="Authorization: Bearer $token"
i=0
for url in $routers; do
    i=$((i + 1))
    for k in 1 2 3 4 5 6; do
        body="object $k through router $i"
        object="$url/v1/buckets/compose-test/objects/r$i-key$k"
        code="$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H "$auth" --data-binary "$body" "$object")"
        [ "$code" = 200 ] || [ "$code" = 201 ] || { echo "compose test: PUT $object answered $code" >&2; exit 1; }
    done
done
# Each object read back through the other router.
i=0
for url in $routers; do
    i=$((i + 1))
    other=$((3 - i))
    for k in 1 2 3 4 5 6; do
        object="$url/v1/buckets/compose-test/objects/r$other-key$k"
        got="$(curl -sS -f -H "$auth" "$object")"
        [ "$got" = "object $k through router $other" ] || {
            echo "compose test: GET $object gave ${got@Q}" >&2
            exit 1
        }
    done
done
echo "== compose test: 12 objects written and read back across both routers"

tests/compose-ops.sh "$deploy_dir"

# Prometheus and the dashboard. The operator above changed the cells'
# members (cell 4 came and went, cell 1's node 3 became node 4): regenerated,
# the targets follow. A migration in progress, so the dashboard's migration
# panels have series: drain cell 3 at 1 byte/s (it stays running), cancelled
# after the check. After compose-ops.sh, so neither disturbs the other.
checks_start=$SECONDS
# Every process: each cell's replicas, the control server, each router.
targets="$(python3 deploy/monitoring.py --dir "$deploy_dir" --count)"
set -a
. "$deploy_dir/control.env"
set +a
drain="$("$release/cellkvctl" cell drain 3 --bandwidth 1)"
job="$(echo "$drain" | sed -n 's/.*job \([^ ]*\) started.*/\1/p')"
[ -n "$job" ] || { echo "compose test: cellkvctl cell drain 3 said: $drain" >&2; exit 1; }
prometheus="$(sed -n 's/.*"prometheus_url": "\(.*\)".*/\1/p' "$deploy_dir/monitoring.json")"
echo "== compose test: Prometheus at $prometheus: $targets targets up, every dashboard metric scraped"
python3 deploy/grafana/check_metrics.py --prometheus "$prometheus" --targets "$targets" --timeout 30
"$release/cellkvctl" jobs cancel "$job" --wait >/dev/null
echo "== compose test: metrics checked, the drain of cell 3 cancelled ($((SECONDS - checks_start)) s)"

compose --profile tools down --volumes --remove-orphans --timeout 20
if docker volume ls -q | grep -q "^${project}_"; then
    echo "compose test: volumes of $project are left after down -v" >&2
    exit 1
fi
echo "== compose test: passed in $((SECONDS - start)) s"
[ $((SECONDS - start)) -le "$limit" ] || { echo "compose test: slower than ${limit} s" >&2; exit 1; }
