#!/usr/bin/env bash
# Durable-write benchmark of ONE cell (3 replicas on loopback, fsync on) against
# a 3-member etcd cluster, with the same wrk load in the same run. Writes the
# RESULT lines to stdout; docs/BENCHMARKS.md records them.
#   usage: scripts/bench-cell.sh [SECONDS=20] [CONNS="16 64"] [VALUE_BYTES=1024]
# CELLKV_BENCH_ETCD=0: the cell only (to compare cell settings run after run).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}; CONNS=${2:-"16 64"}; VB=${3:-1024}
BENCH=${CELLKV_BENCH_DIR:-../shared/bench}
./scripts/setup.sh
. scripts/env.sh
for p in wrk etcd; do
  command -v $p >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk etcd-server etcd-client >/dev/null; }
done
cargo build --release --workspace --bins >/dev/null  # as test.sh: same features, no rebuild
BIN="$CARGO_TARGET_DIR/release/cellkv-cell"
DIR=$(mktemp -d /tmp/cellkv-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export CELLKV_CLUSTER_SECRET=bench-cluster-secret-0001 CELLKV_API_TOKEN=bench-api-token-00000001 CELLKV_ADMIN_TOKEN=bench-admin-token-000001
declare -a API RAFT
PEERS=()
for i in 1 2 3; do API[$i]=127.0.0.1:$(free_port); RAFT[$i]=127.0.0.1:$(free_port); PEERS+=(--peer "$i=${API[$i]},${RAFT[$i]}"); done
for i in 1 2 3; do
  "$BIN" --cell-id 1 --node-id $i --api-listen "${API[$i]}" --raft-listen "${RAFT[$i]}" --data-dir "$DIR/n$i" "${PEERS[@]}" >"$DIR/n$i.log" 2>&1 &
  PIDS+=($!); disown
done
for t in $(seq 1 50); do curl -sf -o /dev/null "http://${API[1]}/metrics" && break; sleep 0.1; done
curl -sf -X POST -H "Authorization: Bearer $CELLKV_ADMIN_TOKEN" "http://${RAFT[1]}/admin/init" >/dev/null
LEADER=""
for t in $(seq 1 100); do
  for i in 1 2 3; do
    if curl -sf "http://${API[$i]}/health" | grep -q '"role":"leader"'; then LEADER=${API[$i]}; fi
  done
  [ -n "$LEADER" ] && break; sleep 0.1
done
[ -n "$LEADER" ] || { echo "no leader"; tail -20 "$DIR"/n*.log; exit 1; }
echo "# $(date -u +%FT%TZ) $(nproc) cores; ${SECS}s per run; ${VB}-byte values; keyspace 10000"
for c in $CONNS; do "$BENCH/runwrk.sh" cellkv "$c" "$SECS" "http://$LEADER" cellkv_put 10000 "$VB" "$CELLKV_API_TOKEN"; done
for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
PIDS=()
[ "${CELLKV_BENCH_ETCD:-1}" = 0 ] && exit 0
"$BENCH/etcd_cluster.sh" stop >/dev/null 2>&1 || true
"$BENCH/etcd_cluster.sh" start >/dev/null
ETCD=$("$BENCH/etcd_cluster.sh" leader)
for c in $CONNS; do "$BENCH/runwrk.sh" etcd "$c" "$SECS" "$ETCD" etcd_put 10000 "$VB"; done
"$BENCH/etcd_cluster.sh" stop >/dev/null
