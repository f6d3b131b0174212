#!/usr/bin/env bash
# Builds the binaries (release) and runs a local cluster on loopback: a router
# in front of 3 cells × 3 replicas (`cellkv-local`; see `cellkv-local --help`).
# Arguments go to cellkv-local, e.g. `--data-dir ./local --cells 3 --port 8080`;
# started again with the same --data-dir it brings the same cluster back.
# Ctrl-C (or SIGTERM) stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --bins
exec "$CARGO_TARGET_DIR/release/cellkv-local" "$@"
