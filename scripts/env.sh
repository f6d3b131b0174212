# Sourced by the scripts: one persistent target dir outside the clone, so the
# RocksDB C++ build (a quarter of an hour on 2 cores) happens once per machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cellkv-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
