#!/usr/bin/env bash
# The TypeScript SDK (sdk/typescript): install its pinned dev dependencies from the lock file
# (npm ci), build it (ES modules, CommonJS, declarations; a type error fails the run), then run
# its tests with node's test runner against the real gateway binary. Needs Node.js 20 or later
# and npm. The gateway binary is ${CARGO_TARGET_DIR:-target}/debug/meshguard, built when missing.
# Arguments are passed to `node --test`: scripts/test-typescript.sh --test-name-pattern=approval
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
sdk="$root/sdk/typescript"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are needed (Node.js 20 or later)" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "Node.js 20 or later is needed (found $(node --version))" >&2
  exit 1
fi

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$root/$target_dir" ;;
esac
binary="$target_dir/debug/meshguard"
if [ ! -x "$binary" ]; then
  echo "-- building the gateway ($binary is missing)"
  cargo build -p meshguard --bin meshguard
fi

echo "-- npm ci (sdk/typescript)"
(cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error)

echo "-- build (sdk/typescript)"
(cd "$sdk" && npm run --silent build && npm run --silent build:tests)

echo "-- node --test (sdk/typescript)"
cd "$sdk"
MESHGUARD_BIN="$binary" node scripts/run-tests.mjs "$@"
