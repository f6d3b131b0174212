#!/usr/bin/env bash
# Builds the binaries (release) and runs a local cluster on loopback: a router
# in front of 3 cells × 3 replicas, and the control plane it follows (a
# control cell and cellkv-control; see `cellkv-local --help`). Once it serves,
# it shows `cellkvctl status` working against it.
# Arguments go to cellkv-local, e.g. `--data-dir ./local --cells 3 --port 8080`;
# started again with the same --data-dir it brings the same cluster back
# (data, cell map, cells added meanwhile). Without --data-dir it uses a new
# temporary directory. Ctrl-C (or SIGTERM) stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --bins
bin="$CARGO_TARGET_DIR/release"

# The cluster's directory: the one given, or a new temporary one.
args=("$@")
dir=""
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --data-dir) dir="${args[$((i + 1))]:-}" ;;
        --data-dir=*) dir="${args[$i]#--data-dir=}" ;;
    esac
done
if [ -z "$dir" ]; then
    dir="$(mktemp -d "${TMPDIR:-/tmp}/cellkv-local-XXXXXX")"
    args+=(--data-dir "$dir")
fi

# A cluster.json from an earlier run does not count: wait for a newer one.
marker="$(mktemp)"
"$bin/cellkv-local" "${args[@]}" &
launcher=$!
# Ctrl-C and SIGTERM go to the launcher, which stops everything (router first,
# then the control server, then the replicas); this script waits for it.
trap 'kill -TERM "$launcher" 2>/dev/null || true' INT TERM

# cellkv-local writes cluster.json (and control.env) once everything serves.
while ! [ "$dir/cluster.json" -nt "$marker" ] && kill -0 "$launcher" 2>/dev/null; do
    sleep 0.5
done
rm -f "$marker"
if kill -0 "$launcher" 2>/dev/null && [ -f "$dir/control.env" ]; then
    echo
    echo "$ cellkvctl status    # with CELLKV_CONTROL_URL and CELLKV_ADMIN_TOKEN from $dir/control.env"
    (set -a && . "$dir/control.env" && "$bin/cellkvctl" status) || true
    echo
fi

status=0
while :; do
    wait "$launcher" && status=0 || status=$?
    kill -0 "$launcher" 2>/dev/null || break
done
exit "$status"
