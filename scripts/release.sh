#!/usr/bin/env bash
# The release binary as shipped: built with the release profile, its debug info split off into
# meshguard.debug (found through the binary's .gnu_debuglink by gdb, perf and addr2line: split,
# not lost), the symbol table kept so panics still name their functions. Prints both sizes.
# Usage: [SKIP_BUILD=1] scripts/release.sh [OUT_DIR=dist]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
target_dir="${CARGO_TARGET_DIR:-target}"
command -v objcopy >/dev/null || { echo "objcopy is required (apt-get install -y binutils)" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p meshguard --bin meshguard
fi
mkdir -p "$out"
built="$target_dir/release/meshguard"
cp "$built" "$out/meshguard"
objcopy --only-keep-debug "$out/meshguard" "$out/meshguard.debug"
objcopy --strip-debug --add-gnu-debuglink="$out/meshguard.debug" "$out/meshguard"
"$out/meshguard" --version >/dev/null
size() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "release build:     $(mib "$(size "$built")")  $built"
echo "shipped binary:    $(mib "$(size "$out/meshguard")")  $out/meshguard"
echo "split debug info:  $(mib "$(size "$out/meshguard.debug")")  $out/meshguard.debug"
