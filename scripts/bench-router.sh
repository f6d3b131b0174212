#!/usr/bin/env bash
# Router overhead: the same wrk load straight to a cell's leader and through
# the router (one cell behind it, so both paths reach the same leader), in one run.
#   usage: scripts/bench-router.sh [SECONDS=20] [CONNS="64"] [VALUE_BYTES=1024]
# CELLKV_BENCH_PIN=1: the router on CPU 1 of its own, the cell's replicas and
# wrk on CPU 0, in both runs (a router tier on its own hosts, as deployed);
# unset, everything shares every CPU (what the router costs in CPU).
# CELLKV_BENCH_ROUTER_FIRST=1: the routed run of each pair goes first.
# CELLKV_BENCH_WARMUP=SECS: an unrecorded PUT load straight to the leader first.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}; CONNS=${2:-"64"}; VB=${3:-1024}
BENCH=${CELLKV_BENCH_DIR:-../shared/bench}
./scripts/setup.sh
. scripts/env.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release -p cellkv-cell -p cellkv-router >/dev/null
R="$CARGO_TARGET_DIR/release"
DIR=$(mktemp -d /tmp/cellkv-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
PIN_CELL=(); PIN_ROUTER=()
if [ -n "${CELLKV_BENCH_PIN:-}" ]; then
  PIN_CELL=(taskset -c 0); PIN_ROUTER=(taskset -c 1)
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export CELLKV_CLUSTER_SECRET=bench-cluster-secret-0001 CELLKV_API_TOKEN=bench-api-token-00000001 CELLKV_ADMIN_TOKEN=bench-admin-token-000001
APP_TOKEN=bench-app-token-0000000001
declare -a API RAFT
PEERS=()
for i in 1 2 3; do API[$i]=127.0.0.1:$(free_port); RAFT[$i]=127.0.0.1:$(free_port); PEERS+=(--peer "$i=${API[$i]},${RAFT[$i]}"); done
for i in 1 2 3; do
  "${PIN_CELL[@]}" "$R/cellkv-cell" --cell-id 1 --node-id $i --api-listen "${API[$i]}" --raft-listen "${RAFT[$i]}" --data-dir "$DIR/n$i" "${PEERS[@]}" >"$DIR/n$i.log" 2>&1 &
  PIDS+=($!); disown
done
ROUTER=127.0.0.1:$(free_port)
cat > "$DIR/router.toml" <<TOML
listen = "$ROUTER"
cell_api_token = "$CELLKV_API_TOKEN"
[[tokens]]
name = "bench"
token = "$APP_TOKEN"
buckets = ["*"]
access = "read_write"
rate_per_sec = 1000000.0
burst = 1000000
[cell_map]
epoch = 1
[[cell_map.cells]]
id = 1
replicas = [ { node_id = 1, api_addr = "${API[1]}" }, { node_id = 2, api_addr = "${API[2]}" }, { node_id = 3, api_addr = "${API[3]}" } ]
TOML
for t in $(seq 1 50); do curl -sf -o /dev/null "http://${API[1]}/metrics" && break; sleep 0.1; done
curl -sf -X POST -H "Authorization: Bearer $CELLKV_ADMIN_TOKEN" "http://${RAFT[1]}/admin/init" >/dev/null
LEADER=""
for t in $(seq 1 100); do
  for i in 1 2 3; do curl -sf "http://${API[$i]}/health" | grep -q '"role":"leader"' && LEADER=${API[$i]}; done
  [ -n "$LEADER" ] && break; sleep 0.1
done
[ -n "$LEADER" ] || { echo "no leader"; exit 1; }
"${PIN_ROUTER[@]}" "$R/cellkv-router" --config "$DIR/router.toml" >"$DIR/router.log" 2>&1 &
PIDS+=($!); disown
for t in $(seq 1 100); do curl -sf -o /dev/null "http://$ROUTER/readyz" && break; sleep 0.1; done
echo "# $(date -u +%FT%TZ) $(nproc) cores; ${SECS}s per run; ${VB}-byte values; keyspace 10000; one cell behind the router${CELLKV_BENCH_PIN:+; pinned: router on CPU 1, replicas and wrk on CPU 0}"
[ -n "${CELLKV_BENCH_HOLD:-}" ] && { echo "router=$ROUTER leader=$LEADER app_token=$APP_TOKEN"; sleep "$CELLKV_BENCH_HOLD"; exit 0; }
if [ -n "${CELLKV_BENCH_WARMUP:-}" ]; then
  # Not recorded: brings the store to steady state (memtable flushes and
  # compactions happen in every measured run, not only in the later ones).
  "${PIN_CELL[@]}" "$BENCH/runwrk.sh" warmup 16 "$CELLKV_BENCH_WARMUP" "http://$LEADER" cellkv_put 10000 "$VB" "$CELLKV_API_TOKEN" >/dev/null
fi
for c in $CONNS; do
  for mode in cellkv_put cellkv_get; do
    direct() { "${PIN_CELL[@]}" "$BENCH/runwrk.sh" direct "$c" "$SECS" "http://$LEADER" "$mode" 10000 "$VB" "$CELLKV_API_TOKEN"; }
    routed() { "${PIN_CELL[@]}" "$BENCH/runwrk.sh" router "$c" "$SECS" "http://$ROUTER" "$mode" 10000 "$VB" "$APP_TOKEN"; }
    # CELLKV_BENCH_ROUTER_FIRST=1 swaps the order (a later run meets a larger store).
    if [ -n "${CELLKV_BENCH_ROUTER_FIRST:-}" ]; then routed; direct; else direct; routed; fi
  done
done
