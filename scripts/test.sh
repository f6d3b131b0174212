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
# Offline: the Kubernetes manifests against the API schemas and our rules,
# and against a fresh render from the cellkv-deploy just built (seconds).
echo "== deploy/k8s/validate.sh"
deploy/k8s/validate.sh
echo "== cargo test --release"
cargo test --release --workspace -- --test-threads=1
echo "== tests/s3-clients.sh (aws-cli, boto3, s3cmd, rclone against cellkv-local)"
tests/s3-clients.sh
# The Compose deployment (deploy/), only where Docker and Compose work: it
# builds the image from the binaries above and runs one deployment (~20 s).
if docker info >/dev/null 2>&1 &&
    { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; }; then
    echo "== tests/compose.sh (Docker is available)"
    tests/compose.sh
else
    echo "== tests/compose.sh skipped: Docker with Compose is not available"
fi
