#!/usr/bin/env bash
# The test command: installs system packages if missing, checks formatting and
# lints, builds every binary once (release profile only), then runs every test
# against those binaries. Integration tests start real processes, so they run
# one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (release, all targets, -D warnings)"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo build --release --bins"
cargo build --release --workspace --bins
echo "== cargo test --release"
cargo test --release --workspace -- --test-threads=1
