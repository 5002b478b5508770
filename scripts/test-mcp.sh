#!/usr/bin/env bash
# End-to-end tests of `meshguard mcp run` (tests/mcp/): the official MCP Python SDK as the client,
# the reference filesystem server from npm as the server, the real gateway binary in between.
#   tests/mcp/node_modules   the servers pinned in tests/mcp/package-lock.json (npm ci)
#   .venv-mcp                the MCP SDK and pytest, pinned in python/requirements-mcp.txt
# Needs python3.11 and Node.js (npm). Environment:
#   PYTHON=python3.11   interpreter for the virtualenv
#   MESHGUARD_BIN=...   binary under test (default target/debug/meshguard, built when missing)
# Arguments are passed to pytest: scripts/test-mcp.sh -k denied -x
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
python="${PYTHON:-python3.11}"
venv=.venv-mcp

# shellcheck source=scripts/pinned-venv.sh
source scripts/pinned-venv.sh
pinned_venv "$venv" python/requirements-mcp.txt

lock_stamp="$(hash_of tests/mcp/package-lock.json)"
if [ ! -f tests/mcp/node_modules/.meshguard-stamp ] \
  || [ "$(cat tests/mcp/node_modules/.meshguard-stamp)" != "$lock_stamp" ]; then
  echo "-- npm ci (tests/mcp)"
  (cd tests/mcp && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_stamp" > tests/mcp/node_modules/.meshguard-stamp
fi

binary="${MESHGUARD_BIN:-$root/target/debug/meshguard}"
if [ ! -x "$binary" ]; then
  echo "-- building the gateway ($binary is missing)"
  cargo build -p meshguard
fi

if [ -x .venv/bin/ruff ]; then
  # The same lints as every Python package (scripts/test-python.sh prepares .venv).
  echo "-- ruff (tests/mcp)"
  .venv/bin/ruff check --config python/ruff.toml tests/mcp
  .venv/bin/ruff format --config python/ruff.toml --check tests/mcp
fi

echo "-- pytest (tests/mcp)"
MESHGUARD_BIN="$binary" "$root/$venv/bin/pytest" -p no:cacheprovider -ra tests/mcp "$@"
