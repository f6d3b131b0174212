#!/usr/bin/env bash
# Stops the Compose deployment of cellkv (SIGTERM, each server's grace) and
# removes its containers and network. The data volumes stay: deploy/up.sh
# brings the same cluster back with its data. `deploy/down.sh --volumes`
# removes the data too (the deployment directory stays; delete it by hand).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -f "$deploy_dir/compose.json" ] || { echo "deploy: no deployment in $deploy_dir" >&2; exit 1; }
compose --profile tools down --remove-orphans "$@"
rm -f "$deploy_dir/deployment.json"
