#!/usr/bin/env bash
# Faults and operator work on a running Compose deployment (called by
# tests/compose.sh with the deployment directory; the deployment is up):
#   1. the load harness drives it through the routers while it cuts cell 1's
#      leader from its followers, heals, then kills cell 2's containers
#      (config/scenarios/compose-partition.toml): every SLO must hold, the
#      histories of the keys must be linearizable, nothing acknowledged lost;
#   2. an operator adds a cell as new containers (cellkv-deploy add-cell +
#      cellkvctl cell add), drains it and removes it, then replaces a
#      replica's container (cellkv-deploy add-replica + cellkvctl replica
#      replace + cellkv-deploy remove-replica); objects written before every
#      step read back after it.
#   tests/compose-ops.sh DEPLOY_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$1"
. scripts/env.sh
bin="$CARGO_TARGET_DIR/release"
deploy() { "$bin/cellkv-deploy" "$@" --dir "$dir"; }
ctl() { "$bin/cellkvctl" "$@"; }
set -a
. "$dir/control.env"
set +a

token="$(sed -n 's/.*"token": "\(.*\)".*/\1/p' "$dir/deployment.json" | head -1)"
router="$(sed -n '/"routers": \[/,/\]/s/.*"\(http[^"]*\)".*/\1/p' "$dir/deployment.json" | head -1)"
auth="Authorization: Bearer $token"

# One request; a 503 (a cell between leaders, its breaker still open: the
# answer says to retry) is retried for up to 15 s, as a client does.
# Prints the body; fails on any other status.
request() {
    local method="$1" key="$2" body="${3:-}" tries=0 code
    local out="$dir/ops-body"
    while :; do
        if [ "$method" = PUT ]; then
            code="$(curl -sS -o "$out" -w '%{http_code}' -X PUT -H "$auth" \
                --data-binary "$body" "$router/v1/buckets/ops/objects/$key")"
        else
            code="$(curl -sS -o "$out" -w '%{http_code}' -H "$auth" "$router/v1/buckets/ops/objects/$key")"
        fi
        case "$code" in
        200 | 201) cat "$out"; return 0 ;;
        503) tries=$((tries + 1)); [ "$tries" -lt 30 ] || break; sleep 0.5 ;;
        *) break ;;
        esac
    done
    echo "compose ops: $method $key answered $code: $(cat "$out")" >&2
    return 1
}

# Writes ops-$1-0..49 and checks that every object written so far reads back.
written=()
write_and_check() {
    local step="$1" k got
    for k in $(seq 0 49); do
        request PUT "$step-$k" "value of $step/$k" >/dev/null || exit 1
        written+=("$step-$k")
    done
    for key in "${written[@]}"; do
        got="$(request GET "$key")" || { echo "compose ops: after $step, GET $key failed" >&2; exit 1; }
        [ "$got" = "value of ${key%-*}/${key##*-}" ] || { echo "compose ops: after $step, $key reads ${got@Q}" >&2; exit 1; }
    done
    echo "== compose ops: after $step, all ${#written[@]} objects read back"
}

echo "== compose ops: the load harness, a leader partition and a whole-cell kill"
"$bin/cellkv-loadtest" run config/scenarios/compose-partition.toml \
    --cluster "$dir/deployment.json" --out "$dir/loadtest"

write_and_check start
echo "== compose ops: add cell 4 as containers, then give it keys"
deploy add-cell --id 4
ctl cell add --id 4 \
    --replica node=1,api=c4-n1:7001,control=c4-n1:7101 \
    --replica node=2,api=c4-n2:7001,control=c4-n2:7101 \
    --replica node=3,api=c4-n3:7001,control=c4-n3:7101 --wait
ctl status
write_and_check added
echo "== compose ops: drain cell 4 and remove it"
ctl cell drain 4 --wait
ctl cell remove 4
deploy remove-cell --id 4
if docker volume ls -q | grep -q "_c4-n1-data$"; then
    echo "compose ops: cell 4's volumes are left" >&2
    exit 1
fi
write_and_check drained
echo "== compose ops: replace node 3 of cell 1 by a new container"
deploy add-replica --cell 1
ctl replica replace 1 3 node=4,api=c1-n4:7001,control=c1-n4:7101
deploy remove-replica --cell 1 --node 3
ctl status
write_and_check replaced
