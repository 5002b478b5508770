#!/usr/bin/env bash
# Packaging: `cargo install --path crates/cli` works from this checkout (the debug profile into a
# temporary root, reusing the test build's target dir so it costs a link, not a build), and the
# installed binary runs. The Python distributions' wheels and sdists are tested by
# python/autogpt-meshguard-plugin/tests/test_packaging.py; the release binary by scripts/release.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
cargo install --path crates/cli --debug --locked --quiet --root "$root" \
  --target-dir "${CARGO_TARGET_DIR:-target}"
installed="$root/bin/meshguard"
version="$("$installed" --version)"
case "$version" in
  "meshguard "*) echo "installed: $version" ;;
  *) echo "the installed binary answered --version with: $version" >&2; exit 1 ;;
esac
"$installed" completions bash | grep -q "_meshguard" || {
  echo "the installed binary writes no bash completions" >&2
  exit 1
}
