#!/usr/bin/env bash
# Durable-write benchmark of ONE cell (3 replicas on loopback, fsync on) against
# a 3-member etcd cluster, with the same wrk load in the same run. Writes the
# RESULT lines to stdout; docs/BENCHMARKS.md records them.
#   usage: scripts/bench-cell.sh [SECONDS=20] [CONNS="16 64"] [VALUE_BYTES=1024]
# CELLKV_BENCH_ETCD=0: the cell only (to compare cell settings run after run).
# CELLKV_BENCH_WARMUP=SECS: an unrecorded 16-connection PUT load before each
# system's runs (the same for the cell and for etcd), to measure steady state.
# CELLKV_BENCH_ROUNDS=N: both clusters up at once, then N pairs of SECONDS-long
# runs in ABBA order (cellkv, etcd, etcd, cellkv, ...), summed up by
# scripts/bench/rounds.py: a slow spell of the shared disk lands on both
# systems instead of deciding one run.
# CELLKV_CELL_BIN=PATH: run that cellkv-cell binary instead of the workspace's
# (to compare two builds: copy one aside, rebuild, run both in turn).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}; CONNS=${2:-"16 64"}; VB=${3:-1024}
BENCH=${CELLKV_BENCH_DIR:-../shared/bench}
./scripts/setup.sh
. scripts/env.sh
for p in wrk etcd; do
  command -v $p >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk etcd-server etcd-client >/dev/null; }
done
if [ -n "${CELLKV_CELL_BIN:-}" ]; then
  BIN=$CELLKV_CELL_BIN  # a build set aside: the workspace's state does not matter
  [ -x "$BIN" ] || { echo "CELLKV_CELL_BIN=$BIN is not an executable file" >&2; exit 1; }
else
  cargo build --release --workspace --bins >/dev/null  # as test.sh: same features, no rebuild
  BIN="$CARGO_TARGET_DIR/release/cellkv-cell"
fi
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
fsync_sum() {  # the leader's WAL fsync seconds and count so far, from its metrics
  curl -sf "http://$LEADER/metrics" | awk '/^cellkv_cell_wal_fsync_seconds_sum/{s=$2} /^cellkv_cell_wal_fsync_seconds_count/{n=$2} END{print s+0, n+0}'
}
warmup() { # URL MODE [TOKEN]: an unrecorded load (memtable flushes, WAL recycling under way)
  [ -z "${CELLKV_BENCH_WARMUP:-}" ] || "$BENCH/runwrk.sh" warmup 16 "$CELLKV_BENCH_WARMUP" "$1" "$2" 10000 "$VB" "${3:-}" >/dev/null
}
cell_run() { # CONNS
  read -r s0 n0 < <(fsync_sum)
  "$BENCH/runwrk.sh" cellkv "$1" "$SECS" "http://$LEADER" cellkv_put 10000 "$VB" "$CELLKV_API_TOKEN"
  read -r s1 n1 < <(fsync_sum)
  python3 -c "import sys; s0,n0,s1,n1=map(float,sys.argv[1:]); print(f'  leader WAL fsyncs: {int(n1-n0)} in the run, mean {(s1-s0)/max(n1-n0,1)*1e6:.0f} us')" "$s0" "$n0" "$s1" "$n1"
}
etcd_run() { # CONNS
  "$BENCH/runwrk.sh" etcd "$1" "$SECS" "$ETCD" etcd_put 10000 "$VB"
}
etcd_up() {
  "$BENCH/etcd_cluster.sh" stop >/dev/null 2>&1 || true
  "$BENCH/etcd_cluster.sh" start >/dev/null
  ETCD=$("$BENCH/etcd_cluster.sh" leader)
}
if [ -n "${CELLKV_BENCH_ROUNDS:-}" ]; then
  etcd_up
  trap '"$BENCH/etcd_cluster.sh" stop >/dev/null 2>&1 || true; cleanup' EXIT
  warmup "http://$LEADER" cellkv_put "$CELLKV_API_TOKEN"
  warmup "$ETCD" etcd_put
  echo "# $CELLKV_BENCH_ROUNDS rounds in ABBA order, both clusters up"
  for c in $CONNS; do
    for r in $(seq 1 "$CELLKV_BENCH_ROUNDS"); do
      if [ $((r % 2)) = 1 ]; then cell_run "$c"; etcd_run "$c"; else etcd_run "$c"; cell_run "$c"; fi
    done | tee "$DIR/rounds-$c"
    python3 scripts/bench/rounds.py < "$DIR/rounds-$c"
  done
  exit 0
fi
warmup "http://$LEADER" cellkv_put "$CELLKV_API_TOKEN"
for c in $CONNS; do cell_run "$c"; done
for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
PIDS=()
[ "${CELLKV_BENCH_ETCD:-1}" = 0 ] && exit 0
etcd_up
warmup "$ETCD" etcd_put
for c in $CONNS; do etcd_run "$c"; done
"$BENCH/etcd_cluster.sh" stop >/dev/null
