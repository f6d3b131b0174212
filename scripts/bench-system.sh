#!/usr/bin/env bash
# The whole system as a user runs it, against etcd, in one run (issue 23).
#
# Starts `cellkv-local` with its defaults (a router in front of 3 cells × 3
# replicas, durability "fsync", plus the control plane: cellkv-control and a
# 3-replica control cell) and a 3-member etcd 3.4 (../shared/bench/
# etcd_cluster.sh), then puts the same wrk load (../shared/bench/kv.lua, 1 KiB
# values over 10 000 keys) on the router and on etcd's leader, in interleaved
# rounds, ABBA order (cellkv, etcd, etcd, cellkv, ...), for each workload:
#   put16      durable PUT, 16 connections        (etcd: put)
#   put64      durable PUT, 64 connections        (etcd: put)
#   get_lin64  linearizable GET, 64 connections   (etcd: range, linearizable)
#   get_stale64 stale GET, 64 connections: `?read=stale` on the path
#              (scripts/bench/system.lua)          (etcd: range, serializable)
# Beside each run's throughput and p99 it prints µs of CPU per operation:
# utime + stime, from /proc/PID/stat before and after the run, summed over
# every process of the system: for cellkv every pid cluster.json lists (the
# router, the 9 data replicas, cellkv-control, the 3 control-cell replicas)
# and cellkv-local itself; for etcd its 3 members. wrk's own CPU is in
# neither. scripts/bench/system.py prints a table per workload and the
# pooled figures last. Everything started here is stopped on exit.
#
#   usage: scripts/bench-system.sh [SECONDS=15]
# CELLKV_BENCH_ROUNDS=N      rounds per workload (default 4: two ABBA cycles)
# CELLKV_BENCH_WARMUP=SECS   unrecorded 16-connection PUT load on each system
#                            first (default 30; it also fills the keyspace
#                            the GETs read)
# CELLKV_BENCH_WORKLOADS     a subset, e.g. "put16 get_lin64" (default: all four)
# CELLKV_BIN_DIR             where the release binaries are (default
#                            $CARGO_TARGET_DIR/release); this script builds nothing
# CELLKV_BENCH_KEEP=1        keep the run's directory (logs, RUN lines)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
ROUNDS=${CELLKV_BENCH_ROUNDS:-4}
WARMUP=${CELLKV_BENCH_WARMUP:-30}
WORKLOADS=${CELLKV_BENCH_WORKLOADS:-"put16 put64 get_lin64 get_stale64"}
VB=1024
KEYS=10000
BENCH=$(cd "${CELLKV_BENCH_DIR:-../shared/bench}" && pwd)
. scripts/env.sh
BIN=${CELLKV_BIN_DIR:-$CARGO_TARGET_DIR/release}
for b in cellkv-local cellkv-cell cellkv-router cellkv-control; do
  [ -x "$BIN/$b" ] || { echo "no $BIN/$b: build first (cargo build --release --workspace --bins) or set CELLKV_BIN_DIR" >&2; exit 1; }
done
for p in wrk etcd etcdctl; do
  command -v $p >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk etcd-server etcd-client >/dev/null; }
done

DIR=$(mktemp -d /tmp/cellkv-bench-system.XXXXXX)
LAUNCHER=""
CELL_PIDS=()
ETCD_STARTED=""

# Stops what this script started: cellkv-local by SIGTERM (it stops the router,
# the control server and the replicas), then SIGKILL for any pid of
# cluster.json still alive; etcd through its script (which kills its own pids).
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$LAUNCHER" ] && kill -0 "$LAUNCHER" 2>/dev/null; then
    kill -TERM "$LAUNCHER" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$LAUNCHER" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$LAUNCHER" 2>/dev/null || true
  fi
  for p in "${CELL_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "$ETCD_STARTED" ]; then
    "$BENCH/etcd_cluster.sh" stop >/dev/null 2>&1 || true
    rm -rf /tmp/etcdbench  # its data; the script's next start clears it anyway
  fi
  if [ "$rc" != 0 ] || [ "${CELLKV_BENCH_KEEP:-}" = 1 ]; then
    echo "# run directory kept: $DIR" >&2
  else
    rm -rf "$DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- cellkv: the local cluster, as `cellkv-local` starts it by default ---
"$BIN/cellkv-local" --data-dir "$DIR/cluster" >"$DIR/cellkv-local.log" 2>&1 &
LAUNCHER=$!
for _ in $(seq 1 240); do
  [ -s "$DIR/cluster/cluster.json" ] && break
  kill -0 "$LAUNCHER" 2>/dev/null || { echo "cellkv-local exited:" >&2; tail -20 "$DIR/cellkv-local.log" >&2; exit 1; }
  sleep 0.5
done
[ -s "$DIR/cluster/cluster.json" ] || { echo "cellkv-local wrote no cluster.json in 120 s" >&2; exit 1; }
sleep 0.5  # cluster.json is written once everything serves; let the write finish
read -r ROUTER TOKEN < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["router"]["url"], c["token"])' "$DIR/cluster/cluster.json")
mapfile -t CELL_PIDS < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
pids = [c["router"]["pid"], c["control"]["pid"]]
pids += [r["pid"] for cell in c["cells"] for r in cell["replicas"]]
pids += [r["pid"] for r in c["control"]["cell"]["replicas"]]
print("\n".join(str(p) for p in pids))' "$DIR/cluster/cluster.json")
CELLKV_CPU_PIDS=("$LAUNCHER" "${CELL_PIDS[@]}")

# Does a read option reach the cells through the router? The cell API refuses
# an unknown `read=` value with 400; a 200 or 404 means the router dropped it,
# and then get_stale64 measures linearizable reads on cellkv's side.
probe=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  "$ROUTER/v1/buckets/bench/objects/k00000000000?read=no-such-mode")
STALE_NOTE=""
if [ "$probe" != 400 ] && grep -q get_stale64 <<<"$WORKLOADS"; then
  STALE_NOTE="WARNING: the router ignored ?read=no-such-mode (HTTP $probe, not 400): it does not pass read options to the cells, so cellkv's get_stale64 reads were LINEARIZABLE, against etcd's serializable ones"
  echo "# $STALE_NOTE"
fi

# --- etcd: 3 members on loopback ---
"$BENCH/etcd_cluster.sh" stop >/dev/null 2>&1 || true
ETCD_STARTED=1
"$BENCH/etcd_cluster.sh" start >/dev/null
ETCD=$("$BENCH/etcd_cluster.sh" leader)
[ -n "$ETCD" ] || { echo "etcd has no leader" >&2; exit 1; }
mapfile -t ETCD_PIDS < /tmp/etcdbench/pids

# CPU time (clock ticks, user + system, all threads) of the given pids. The
# fields after the command name's closing parenthesis start at field 3
# (state), so utime (14) and stime (15) are the 12th and 13th of them.
cpu_ticks() {
  local total=0 p stat
  local -a f
  for p in "$@"; do
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || { echo "process $p is gone" >&2; return 1; }
    read -r -a f <<<"${stat##*) }"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}
# The machine's busy and total jiffies, from /proc/stat's cpu line.
machine_ticks() {
  local _c u n s i w q sq st
  read -r _c u n s i w q sq st _ </proc/stat
  echo "$((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))"
}
TCK=$(getconf CLK_TCK)

# One recorded run: run SYSTEM WORKLOAD ROUND. Prints a RUN line.
run() {
  local sys=$1 w=$2 round=$3 url token mode c0 c1 m0 t0 m1 t1 res
  local -a pids
  case $w in
    put16) conns=16; emode=etcd_put; cmode=cellkv_put ;;
    put64) conns=64; emode=etcd_put; cmode=cellkv_put ;;
    get_lin64) conns=64; emode=etcd_get_lin; cmode=cellkv_get ;;
    get_stale64) conns=64; emode=etcd_get_ser; cmode=cellkv_get_stale ;;
    *) echo "unknown workload $w" >&2; return 1 ;;
  esac
  if [ "$sys" = cellkv ]; then
    url=$ROUTER; token=$TOKEN; mode=$cmode; pids=("${CELLKV_CPU_PIDS[@]}")
  else
    url=$ETCD; token=""; mode=$emode; pids=("${ETCD_PIDS[@]}")
  fi
  c0=$(cpu_ticks "${pids[@]}"); read -r m0 t0 < <(machine_ticks)
  res=$(CELLKV_KV_LUA="$BENCH/kv.lua" timeout $((SECS + 30)) \
    wrk -t2 -c"$conns" -d"${SECS}s" --timeout 10s -s scripts/bench/system.lua "$url" -- "$mode" $KEYS $VB $token |
    grep '^RESULT') || { echo "wrk failed: $sys $w round $round" >&2; return 1; }
  c1=$(cpu_ticks "${pids[@]}"); read -r m1 t1 < <(machine_ticks)
  # RESULT fields (kv.lua): reqs secs ops_s p50_ms p99_ms ... non2xx sockerr timeouts bad
  python3 - "$res" "$sys" "$w" "$conns" "$round" $((c1 - c0)) "$TCK" $((m1 - m0)) $((t1 - t0)) <<'EOF'
import sys
res, system, w, conns, rnd, ticks, tck, busy, total = sys.argv[1:]
f = dict(p.split("=", 1) for p in res.split()[1:])
errors = int(f["non2xx"]) + int(f["sockerr"]) + int(f["timeouts"])
cpu_us = int(ticks) * 1e6 / int(tck)
reqs = int(f["reqs"])
print(f"RUN system={system} workload={w} conns={conns} round={rnd} reqs={reqs} secs={f['secs']} "
      f"ops_s={f['ops_s']} p50_ms={f['p50_ms']} p99_ms={f['p99_ms']} errors={errors} "
      f"cpu_us={cpu_us:.0f} cpu_us_per_op={cpu_us / max(reqs, 1):.1f} "
      f"busy={100 * int(busy) / max(int(total), 1):.0f}%")
EOF
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(free -g | awk '/^Mem/{print $2}') GiB; cellkv $("$BIN/cellkv-local" --version | awk '{print $2}') (commit $(git rev-parse --short HEAD)) through its router, cellkv-local defaults (3 cells × 3 replicas, fsync); etcd $(etcd --version | awk '/etcd Version/{print $3}') 3 members"
echo "# ${SECS}s per run, ${ROUNDS} rounds per workload in ABBA order, warm-up ${WARMUP}s of PUTs each; ${VB}-byte values, ${KEYS} keys; workloads: $WORKLOADS"
echo "# cellkv CPU: ${#CELLKV_CPU_PIDS[@]} processes (cellkv-local, router, cellkv-control, 12 replicas); etcd CPU: ${#ETCD_PIDS[@]} members"

if [ "$WARMUP" -gt 0 ]; then
  for target in "$ROUTER cellkv_put $TOKEN" "$ETCD etcd_put"; do
    read -r url mode token <<<"$target"
    CELLKV_KV_LUA="$BENCH/kv.lua" timeout $((WARMUP + 30)) \
      wrk -t2 -c16 -d"${WARMUP}s" --timeout 10s -s scripts/bench/system.lua "$url" -- "$mode" $KEYS $VB ${token:-} >/dev/null
  done
fi

for w in $WORKLOADS; do
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then
      run cellkv "$w" "$r"; run etcd "$w" "$r"
    else
      run etcd "$w" "$r"; run cellkv "$w" "$r"
    fi
  done
done | tee "$DIR/runs.txt"

python3 scripts/bench/system.py <"$DIR/runs.txt"
[ -z "$STALE_NOTE" ] || { echo; echo "# $STALE_NOTE"; }
