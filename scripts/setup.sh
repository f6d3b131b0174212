#!/usr/bin/env bash
# Installs what building and testing cellkv needs on a fresh Debian machine:
# clang + libclang-dev (RocksDB's bindgen/C++ build). Idempotent and quiet when
# everything is already there. Run as root (or with sudo available).
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
# objcopy strips the binaries of the container image (deploy/build-image.sh).
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
# The Compose deployment's faults (ADR 0022): libfaketime goes into the image
# (a replica's clock skew); nsenter, iptables and tc act on the containers.
dpkg -s libfaketime >/dev/null 2>&1 || need+=(libfaketime)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v tc >/dev/null 2>&1 || need+=(iproute2)
# deploy/k8s/validate.sh installs kubernetes-validate into a venv;
# deploy/monitoring.py and the compose test's checks are Python too.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install a Rust toolchain (>= 1.88)"; exit 1; }
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
