#!/usr/bin/env bash
# Builds the `cellkv-prometheus:dev` image (FROM scratch) from Debian's
# `prometheus` package: `apt-get download`s it and the packages its web UI
# links into (libjs-*, fonts-glyphicons-halflings), unpacks them into a
# root filesystem with `dpkg-deb -x`, adds the shared libraries `ldd` lists
# for the binary (libc and the loader), a minimal /etc with a non-root user
# (uid 10002) and /prometheus owned by it, then `docker build`s
# deploy/prometheus/Dockerfile over it. No registry is used. The downloaded
# packages are kept in the cache dir; the build is skipped when the tagged
# image was built from the same files.
#
#   deploy/build-prometheus-image.sh
#   CELLKV_PROMETHEUS_IMAGE=prom:x deploy/build-prometheus-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
image="${CELLKV_PROMETHEUS_IMAGE:-cellkv-prometheus:dev}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/cellkv-prometheus-debs"
uid=10002
# The server, and what /usr/share/prometheus/web/static links to.
packages=(prometheus libjs-bootstrap4 libjs-popper.js libjs-eonasdan-bootstrap-datetimepicker
    libjs-jquery libjs-jquery-hotkeys libjs-moment libjs-moment-timezone libjs-mustache
    libjs-rickshaw libjs-d3 fonts-glyphicons-halflings)

mkdir -p "$cache"
if ! ls "$cache"/prometheus_*.deb >/dev/null 2>&1 || [ "$(ls "$cache"/*.deb | wc -l)" -lt ${#packages[@]} ]; then
    echo "== apt-get download ${packages[*]}"
    # A fresh machine has no package lists yet.
    if ! (cd "$cache" && apt-get download "${packages[@]}" >/dev/null 2>&1); then
        apt-get update -qq
        (cd "$cache" && apt-get download "${packages[@]}")
    fi
fi

# Nothing to do when the image was built from these very inputs: the
# packages, this script, the Dockerfile and the host's libc and loader.
inputs="$( (ls "$cache"/*.deb; echo "$0" deploy/prometheus/Dockerfile \
    "$(ldd /bin/true | awk '$3 ~ /libc.so/ { print $3 }')" /lib64/ld-linux-x86-64.so.2) |
    xargs sha256sum | awk '{ print $1 }' | sha256sum | cut -c1-32)"
if [ "$(docker image inspect -f '{{index .Config.Labels "io.cellkv.inputs"}}' "$image" 2>/dev/null)" = "$inputs" ]; then
    echo "build-prometheus-image: $image is up to date (inputs $inputs)"
    exit 0
fi

stage="$cache/image"
rm -rf "$stage"
mkdir -p "$stage/rootfs" "$stage/data"
chmod 0755 "$stage/data"
echo "== staging the root filesystem in $stage"
for p in "${packages[@]}"; do
    deb="$(ls -t "$cache/${p}_"*.deb | head -1)"
    dpkg-deb -x "$deb" "$stage/rootfs"
done
root="$stage/rootfs"
# Not needed to run: the second tool, docs, init scripts, man pages.
rm -rf "$root/usr/bin/promtool" "$root/usr/share/doc" "$root/usr/share/man" \
    "$root/etc/init.d" "$root/etc/logrotate.d" "$root/lib/systemd" "$root/etc/default" \
    "$root/usr/share/sass"
# moment-timezone ships 200 MB of builds; the UI loads one of them.
find "$root/usr/share/javascript/moment-timezone" -mindepth 1 -maxdepth 1 \
    ! -name moment-timezone-with-data.min.js -exec rm -rf {} +
# Every link of the web UI must resolve inside the image.
broken="$(cd "$root" && find usr/share/prometheus -xtype l | while read -r l; do
    t="$(readlink "$l")"; [ -e "$(dirname "$l")/$t" ] || echo "$l -> $t"; done)"
[ -z "$broken" ] || { echo "build-prometheus-image: dangling links: $broken" >&2; exit 1; }

libs="$(ldd "$root/usr/bin/prometheus" |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)"
for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mkdir -p "$root/tmp"
chmod 1777 "$root/tmp"
cat >"$root/etc/passwd" <<PASSWD
root:x:0:0:root:/:/nonexistent
prometheus:x:$uid:$uid:prometheus:/prometheus:/nonexistent
nobody:x:65534:65534:nobody:/nonexistent:/nonexistent
PASSWD
cat >"$root/etc/group" <<GROUP
root:x:0:
prometheus:x:$uid:
nogroup:x:65534:
GROUP
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
cp deploy/prometheus/Dockerfile "$stage/Dockerfile"

version="$(dpkg-deb -f "$(ls -t "$cache"/prometheus_*.deb | head -1)" Version)"
hash="$(cd "$stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-32)"
old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
old_hash="$(docker image inspect -f '{{index .Config.Labels "io.cellkv.content"}}' "$image" 2>/dev/null || true)"
old_inputs="$(docker image inspect -f '{{index .Config.Labels "io.cellkv.inputs"}}' "$image" 2>/dev/null || true)"
if [ -n "$old_id" ] && [ "$old_hash" = "$hash" ] && [ "$old_inputs" = "$inputs" ]; then
    echo "== $image is up to date (content $hash)"
else
    echo "== docker build -t $image (Debian prometheus $version)"
    docker build -q --label "io.cellkv.content=$hash" --label "io.cellkv.inputs=$inputs" \
        --label "io.cellkv.prometheus-version=$version" -t "$image" "$stage" >/dev/null
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
fi
rm -rf "$stage"
size="$(docker image inspect -f '{{.Size}}' "$image")"
echo "build-prometheus-image: $image: $((size / 1000000)) MB, Debian prometheus $version"
