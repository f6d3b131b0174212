#!/usr/bin/env bash
# Router overhead: the same wrk load straight to a cell's leader and through
# the router (one cell behind it, so both paths reach the same leader), in one run.
#   usage: scripts/bench-router.sh [SECONDS=20] [CONNS="64"] [VALUE_BYTES=1024]
# CELLKV_BENCH_PIN=1: the router on CPU 1 of its own, the cell's replicas and
# wrk on CPU 0, in both runs (a router tier on its own hosts, as deployed);
# unset, everything shares every CPU (what the router costs in CPU).
# CELLKV_BENCH_ROUTER_FIRST=1: the routed run of each pair goes first.
# CELLKV_BENCH_WARMUP=SECS: an unrecorded PUT load straight to the leader first.
# CELLKV_BENCH_OPS="cellkv_put": the operations to run (default: PUT, then GET).
# CELLKV_BENCH_ROUNDS=N: instead of one pair of long runs, N pairs of short
# ones (SECONDS each) in ABBA order (direct, router, router, direct, ...), each
# run's latency distribution pooled per path (scripts/bench/pool.py): the
# store's growth and its compactions fall on both paths alike. Ends with the
# time the router itself added (its cellkv_router_added_seconds histogram).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}; CONNS=${2:-"64"}; VB=${3:-1024}
BENCH=${CELLKV_BENCH_DIR:-../shared/bench}
./scripts/setup.sh
. scripts/env.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --workspace --bins >/dev/null  # as test.sh: same features, no rebuild
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
if [ -n "${CELLKV_BENCH_ROUNDS:-}" ]; then
  mkdir -p "$DIR/q"
  # One short run: wrk with the shared kv.lua, its latency grid kept in a file.
  run_q() { # PATH CONNS MODE ROUND URL TOKEN
    local out="$DIR/q/$3-$2-$1-$4"
    CELLKV_KV_LUA="$BENCH/kv.lua" CELLKV_QUANTILES_OUT="$out" "${PIN_CELL[@]}" \
      wrk -t2 -c"$2" -d"${SECS}s" --timeout 10s -s scripts/bench/quantiles.lua "$5" -- "$3" 10000 "$VB" "$6" \
      | sed -n "s/^RESULT /$1 round=$4 /p" >&2
    echo "$out"
  }
  echo "# $CELLKV_BENCH_ROUNDS rounds in ABBA order, pooled per path"
  for c in $CONNS; do
    for mode in ${CELLKV_BENCH_OPS:-cellkv_put cellkv_get}; do
      D=(); T=()
      for r in $(seq 1 "$CELLKV_BENCH_ROUNDS"); do
        direct() { D+=("$(run_q direct "$c" "$mode" "$r" "http://$LEADER" "$CELLKV_API_TOKEN")"); }
        routed() { T+=("$(run_q router "$c" "$mode" "$r" "http://$ROUTER" "$APP_TOKEN")"); }
        if [ $((r % 2)) = 1 ]; then direct; routed; else routed; direct; fi
      done
      echo "## $mode, $c connections"
      python3 scripts/bench/pool.py "direct=$(IFS=,; echo "${D[*]}")" "router=$(IFS=,; echo "${T[*]}")"
    done
  done
  # The router's own share of every routed request of these runs, measured
  # inside it: no cell stall can land in this figure.
  echo "## time added inside the router (cellkv_router_added_seconds, all routed runs)"
  curl -sf "http://$ROUTER/metrics" | python3 scripts/bench/added.py
  exit 0
fi
for c in $CONNS; do
  for mode in ${CELLKV_BENCH_OPS:-cellkv_put cellkv_get}; do
    direct() { "${PIN_CELL[@]}" "$BENCH/runwrk.sh" direct "$c" "$SECS" "http://$LEADER" "$mode" 10000 "$VB" "$CELLKV_API_TOKEN"; }
    routed() { "${PIN_CELL[@]}" "$BENCH/runwrk.sh" router "$c" "$SECS" "http://$ROUTER" "$mode" 10000 "$VB" "$APP_TOKEN"; }
    # CELLKV_BENCH_ROUTER_FIRST=1 swaps the order (a later run meets a larger store).
    if [ -n "${CELLKV_BENCH_ROUTER_FIRST:-}" ]; then routed; direct; else direct; routed; fi
  done
done
