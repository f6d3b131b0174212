#!/usr/bin/env bash
# Builds the `cellkv:dev` image (FROM scratch): builds the release binaries
# (cargo skips what is fresh), stages a root filesystem with the binaries
# stripped of debug info, the shared libraries `ldd` says they need (and the
# dynamic loader), a minimal /etc with a non-root user (uid 10001), /data
# owned by it and /tmp, then `docker build`s deploy/Dockerfile over it.
#
#   deploy/build-image.sh              # tag cellkv:dev
#   CELLKV_IMAGE=cellkv:x deploy/build-image.sh
#   CELLKV_SKIP_BUILD=1 deploy/build-image.sh   # use the binaries as they are
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cellkv-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
image="${CELLKV_IMAGE:-cellkv:dev}"
bins=(cellkv-cell cellkv-router cellkv-control cellkvctl cellkv-loadtest cellkv-deploy)
uid=10001

if [ "${CELLKV_SKIP_BUILD:-0}" != 1 ]; then
    # A fresh machine: clang and libclang-dev for RocksDB, as the other scripts.
    ./scripts/setup.sh
    echo "== cargo build --release --workspace --bins"
    cargo build --release --workspace --bins
fi
release="$CARGO_TARGET_DIR/release"
for b in "${bins[@]}"; do
    [ -x "$release/$b" ] || { echo "build-image: $release/$b is missing" >&2; exit 1; }
done

# Staged next to the target dir (not in the repository): the context is the
# size of the image.
stage="$CARGO_TARGET_DIR/docker-image"
rm -rf "$stage"
mkdir -p "$stage/rootfs/usr/local/bin" "$stage/rootfs/etc" "$stage/rootfs/tmp" "$stage/data"
chmod 1777 "$stage/rootfs/tmp"
chmod 0755 "$stage/data"

echo "== staging the root filesystem in $stage"
for b in "${bins[@]}"; do
    objcopy --strip-debug "$release/$b" "$stage/rootfs/usr/local/bin/$b"
done

# Every library the dynamic binaries load, at the path the loader looks for
# it, and the loader itself. `ldd` lines: "name => /path (addr)" or "/path (addr)".
libs="$(for b in "${bins[@]}"; do ldd "$release/$b"; done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)"
for lib in $libs; do
    mkdir -p "$stage/rootfs$(dirname "$lib")"
    cp -L "$lib" "$stage/rootfs$lib"
done

# libfaketime (Debian's), preloaded by every data replica: the load harness
# moves one replica's wall clock through a file in its /data (ADR 0022).
faketime="$(dpkg -L libfaketime 2>/dev/null | grep '/libfaketimeMT\.so\.1$' | head -1 || true)"
[ -n "$faketime" ] || { echo "build-image: libfaketime is missing (scripts/setup.sh installs it)" >&2; exit 1; }
mkdir -p "$stage/rootfs/usr/lib/cellkv"
cp -L "$faketime" "$stage/rootfs/usr/lib/cellkv/libfaketime.so.1"
for lib in $(ldd "$faketime" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    [ -e "$stage/rootfs$lib" ] || { mkdir -p "$stage/rootfs$(dirname "$lib")"; cp -L "$lib" "$stage/rootfs$lib"; }
done

cat >"$stage/rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/:/nonexistent
cellkv:x:$uid:$uid:cellkv:/data:/nonexistent
nobody:x:65534:65534:nobody:/nonexistent:/nonexistent
PASSWD
cat >"$stage/rootfs/etc/group" <<GROUP
root:x:0:
cellkv:x:$uid:
nogroup:x:65534:
GROUP
# Host names (other containers) from /etc/hosts, then Docker's DNS.
echo "hosts: files dns" >"$stage/rootfs/etc/nsswitch.conf"
cp "$root/deploy/Dockerfile" "$stage/Dockerfile"

# The same content makes the same image: skip the build when the tagged
# image was built from exactly these files.
hash="$(cd "$stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)"
old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
old_hash="$(docker image inspect -f '{{index .Config.Labels "io.cellkv.content"}}' "$image" 2>/dev/null || true)"
if [ -n "$old_id" ] && [ "$old_hash" = "$hash" ]; then
    echo "== $image is up to date (content $hash)"
else
    echo "== docker build -t $image"
    # The legacy builder warns that it is deprecated; BuildKit is not needed here.
    docker build -q --label "io.cellkv.content=$hash" -t "$image" "$stage" >/dev/null
    # The image this one replaces, unless something still uses it.
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
fi
rm -rf "$stage"
size="$(docker image inspect -f '{{.Size}}' "$image")"
echo "build-image: $image: $((size / 1000000)) MB ($size bytes)"
docker run --rm "$image" /usr/local/bin/cellkvctl --version
