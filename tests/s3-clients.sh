#!/usr/bin/env bash
# Real S3 clients, each with its default settings, against cellkv-local's S3
# API over plain HTTP (docs/s3.md): aws-cli, boto3 and s3cmd from PyPI (in a
# venv under $HOME/.cache/cellkv-pyenv, made here), rclone from Debian. Each
# makes a bucket, uploads files of 2 KiB and 6 MiB, lists with prefixes and
# delimiters, downloads and compares, copies server-side, syncs a tree with
# awkward key names (spaces, unicode, `+`, `%`), deletes recursively and
# removes the bucket.
#
# 6 MiB is below every client's default multipart threshold (aws-cli and
# boto3 8 MiB, s3cmd 15 MiB, rclone 200 MiB), so each sends one PUT: multipart
# uploads are phase 2 of the S3 work. The cluster takes objects up to 8 MiB
# (`cellkv-local --max-object-mib 8`; the default is 4). Needs no stdin;
# stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
. scripts/env.sh

log() { echo "== s3-clients: $*"; }

# ---- Clients.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
command -v rclone >/dev/null 2>&1 || need+=(rclone)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    $SUDO apt-get update -qq </dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" </dev/null >/dev/null
fi
pyenv="$HOME/.cache/cellkv-pyenv"
if ! [ -x "$pyenv/bin/aws" ] || ! [ -x "$pyenv/bin/s3cmd" ] || ! "$pyenv/bin/python" -c 'import boto3' 2>/dev/null; then
    log "installing awscli, boto3 and s3cmd into $pyenv"
    python3 -m venv "$pyenv"
    "$pyenv/bin/pip" install -q --disable-pip-version-check awscli boto3 s3cmd </dev/null
fi
"$pyenv/bin/aws" --version
"$pyenv/bin/python" -c 'import boto3, botocore; print("boto3", boto3.__version__, "botocore", botocore.__version__)'
"$pyenv/bin/s3cmd" --version
rclone version >"$HOME/.cache/cellkv-rclone-version" && head -1 "$HOME/.cache/cellkv-rclone-version"

# ---- The cluster.
cargo build --release --workspace --bins
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d "${TMPDIR:-/tmp}/cellkv-s3-clients-XXXXXX")"
launcher=""
cleanup() {
    status=$?
    if [ -n "$launcher" ] && kill -0 "$launcher" 2>/dev/null; then
        kill -TERM "$launcher" 2>/dev/null || true
        wait "$launcher" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ]; then
        log "FAILED; kept $work (router log: $work/cluster/router/router.log)"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$bin/cellkv-local" --data-dir "$work/cluster" --max-object-mib 8 </dev/null >"$work/local.log" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do
    [ -f "$work/cluster/cluster.json" ] && break
    kill -0 "$launcher" 2>/dev/null || { cat "$work/local.log"; exit 1; }
    sleep 0.2
done
[ -f "$work/cluster/cluster.json" ] || { log "cellkv-local did not start"; cat "$work/local.log"; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["s3"][sys.argv[2]])' "$work/cluster/cluster.json" "$1"; }
URL="$(field url)"
export AWS_ACCESS_KEY_ID="$(field access_key)"
export AWS_SECRET_ACCESS_KEY="$(field secret_key)"
export AWS_DEFAULT_REGION="$(field region)"
# Only these settings: the clients' own defaults otherwise (no ~/.aws, ~/.s3cfg).
export AWS_CONFIG_FILE="$work/aws-config" AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
log "cellkv-local serves S3 at $URL"

# ---- The files.
files="$work/files"
tree="$work/tree"
mkdir -p "$files" "$tree/dir with spaces" "$tree/ünïcødé" "$tree/plus" "$tree/percent" "$tree/deep/er/est"
head -c 2048 /dev/urandom >"$files/small.bin"
head -c $((6 << 20)) /dev/urandom >"$files/big.bin"
echo "spaces" >"$tree/dir with spaces/file one.txt"
echo "unicode" >"$tree/ünïcødé/日本語 ñ.txt"
echo "plus" >"$tree/plus/a+b+c.txt"
echo "percent" >"$tree/percent/100% sure %41.txt"
head -c 5000 /dev/urandom >"$tree/deep/er/est/data.bin"
echo "top" >"$tree/top.txt"

same() { cmp -s "$1" "$2" || { log "MISMATCH $1 vs $2"; exit 1; }; }
contains() { grep -qF -- "$2" <<<"$1" || { log "expected '$2' in: $1"; exit 1; }; }

# ---- aws-cli.
log "aws-cli"
aws=("$pyenv/bin/aws" --endpoint-url "$URL")
b=aws-cli-bucket
"${aws[@]}" s3 mb "s3://$b"
"${aws[@]}" s3 cp "$files/small.bin" "s3://$b/files/small.bin"
"${aws[@]}" s3 cp "$files/big.bin" "s3://$b/files/big.bin"
contains "$("${aws[@]}" s3 ls "s3://$b/")" "PRE files/"
contains "$("${aws[@]}" s3 ls "s3://$b/files/")" "big.bin"
out="$("${aws[@]}" s3api list-objects-v2 --bucket "$b" --delimiter / --output json)"
contains "$out" '"Prefix": "files/"'
"${aws[@]}" s3 cp "s3://$b/files/big.bin" "$work/aws-big.bin"
same "$files/big.bin" "$work/aws-big.bin"
"${aws[@]}" s3 cp "s3://$b/files/small.bin" "s3://$b/copy/small.bin"
"${aws[@]}" s3 cp "s3://$b/copy/small.bin" "$work/aws-small.bin"
same "$files/small.bin" "$work/aws-small.bin"
"${aws[@]}" s3 sync "$tree" "s3://$b/tree"
"${aws[@]}" s3 sync "s3://$b/tree" "$work/aws-tree"
diff -r "$tree" "$work/aws-tree"
[ -z "$("${aws[@]}" s3 sync "$tree" "s3://$b/tree" --dryrun)" ] || { log "aws-cli: a second sync would upload again"; exit 1; }
"${aws[@]}" s3 rm --recursive "s3://$b"
"${aws[@]}" s3 rb "s3://$b"
if "${aws[@]}" s3 ls "s3://$b" >/dev/null 2>&1; then log "aws-cli: the bucket survived rb"; exit 1; fi

# ---- boto3.
log "boto3"
"$pyenv/bin/python" - "$URL" "$files" "$tree" "$work" <<'EOF'
import os, sys, filecmp
import boto3
url, files, tree, work = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=url)
b = "boto3-bucket"
s3.create_bucket(Bucket=b)
assert b in [x["Name"] for x in s3.list_buckets()["Buckets"]]
s3.put_object(Bucket=b, Key="files/small.bin", Body=open(f"{files}/small.bin", "rb").read(),
              ContentType="application/x-test", Metadata={"color": "blue"})
s3.upload_file(f"{files}/big.bin", b, "files/big.bin")
h = s3.head_object(Bucket=b, Key="files/small.bin")
assert h["Metadata"] == {"color": "blue"}, h["Metadata"]
assert h["ContentType"] == "application/x-test"
for root, _, names in os.walk(tree):
    for n in names:
        p = os.path.join(root, n)
        s3.upload_file(p, b, "tree/" + os.path.relpath(p, tree))
r = s3.list_objects_v2(Bucket=b, Delimiter="/")
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["files/", "tree/"], r
r = s3.list_objects_v2(Bucket=b, Prefix="tree/", Delimiter="/")
assert "tree/top.txt" in [o["Key"] for o in r["Contents"]], r
assert "tree/ünïcødé/" in [p["Prefix"] for p in r["CommonPrefixes"]], r
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b, PaginationConfig={"PageSize": 2}) for o in page.get("Contents", [])]
assert len(keys) == 8 and keys == sorted(keys, key=lambda k: k.encode()), keys
s3.download_file(b, "files/big.bin", f"{work}/boto-big.bin")
assert filecmp.cmp(f"{files}/big.bin", f"{work}/boto-big.bin", shallow=False)
body = s3.get_object(Bucket=b, Key="files/small.bin", Range="bytes=10-19")["Body"].read()
assert body == open(f"{files}/small.bin", "rb").read()[10:20]
s3.copy_object(Bucket=b, Key="copy/small.bin", CopySource={"Bucket": b, "Key": "files/small.bin"})
assert s3.get_object(Bucket=b, Key="copy/small.bin")["Body"].read() == open(f"{files}/small.bin", "rb").read()
s3.copy_object(Bucket=b, Key="copy/small.bin", CopySource={"Bucket": b, "Key": "copy/small.bin"},
               MetadataDirective="REPLACE", Metadata={"state": "replaced"})
assert s3.head_object(Bucket=b, Key="copy/small.bin")["Metadata"] == {"state": "replaced"}
try:
    s3.put_object(Bucket=b, Key="files/small.bin", Body=b"x", IfNoneMatch="*")
    raise SystemExit("a conditional put overwrote an object")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "PreconditionFailed", e.response
left = [{"Key": o["Key"]} for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b) for o in page.get("Contents", [])]
r = s3.delete_objects(Bucket=b, Delete={"Objects": left})
assert len(r["Deleted"]) == len(left) and not r.get("Errors"), r
s3.delete_bucket(Bucket=b)
assert b not in [x["Name"] for x in s3.list_buckets()["Buckets"]]
print("boto3: ok")
EOF

# ---- s3cmd.
log "s3cmd"
hostport="${URL#http://}"
cat >"$work/s3cfg" <<EOF
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = $hostport
host_bucket = $hostport
bucket_location = $AWS_DEFAULT_REGION
use_https = False
EOF
s3cmd=("$pyenv/bin/s3cmd" -c "$work/s3cfg")
b=s3cmd-bucket
"${s3cmd[@]}" mb "s3://$b"
"${s3cmd[@]}" put "$files/small.bin" "$files/big.bin" "s3://$b/files/"
contains "$("${s3cmd[@]}" ls "s3://$b/")" "DIR"
contains "$("${s3cmd[@]}" ls "s3://$b/files/")" "s3://$b/files/big.bin"
"${s3cmd[@]}" get "s3://$b/files/big.bin" "$work/s3cmd-big.bin"
same "$files/big.bin" "$work/s3cmd-big.bin"
"${s3cmd[@]}" cp "s3://$b/files/small.bin" "s3://$b/copy/small.bin"
"${s3cmd[@]}" get "s3://$b/copy/small.bin" "$work/s3cmd-small.bin"
same "$files/small.bin" "$work/s3cmd-small.bin"
"${s3cmd[@]}" sync "$tree/" "s3://$b/tree/"
"${s3cmd[@]}" sync "s3://$b/tree/" "$work/s3cmd-tree/"
diff -r "$tree" "$work/s3cmd-tree"
"${s3cmd[@]}" del --recursive --force "s3://$b"
"${s3cmd[@]}" rb "s3://$b"

# ---- rclone.
log "rclone"
export RCLONE_CONFIG="$work/rclone.conf"
export RCLONE_CONFIG_CK_TYPE=s3 RCLONE_CONFIG_CK_PROVIDER=Other RCLONE_CONFIG_CK_ENDPOINT="$URL"
export RCLONE_CONFIG_CK_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" RCLONE_CONFIG_CK_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export RCLONE_CONFIG_CK_REGION="$AWS_DEFAULT_REGION"
touch "$RCLONE_CONFIG"
# rclone 1.60's AWS SDK refuses an AWS_CA_BUNDLE with its own HTTP transport
# ("LoadCustomCABundleError"); this is plain HTTP, no CA is needed.
rclone() { env -u AWS_CA_BUNDLE rclone "$@"; }
b=rclone-bucket
rclone mkdir "ck:$b"
rclone copy "$files" "ck:$b/files"
contains "$(rclone lsf "ck:$b")" "files/"
contains "$(rclone lsf "ck:$b/files")" "big.bin"
rclone copy "ck:$b/files" "$work/rclone-files"
same "$files/big.bin" "$work/rclone-files/big.bin"
rclone copyto "ck:$b/files/small.bin" "ck:$b/copy/small.bin"
rclone cat "ck:$b/copy/small.bin" | cmp - "$files/small.bin"
rclone sync "$tree" "ck:$b/tree"
rclone check "$tree" "ck:$b/tree"
rclone copy "ck:$b/tree" "$work/rclone-tree"
diff -r "$tree" "$work/rclone-tree"
rclone purge "ck:$b"
if grep -qF "$b" <<<"$(rclone lsd ck:)"; then log "rclone: the bucket survived purge"; exit 1; fi

log "every client passed"
