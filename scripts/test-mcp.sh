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

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# Reinstall only when the pinned inputs changed, so repeated runs start at once.
stamp="$(hash_of python/requirements-mcp.txt)"
if [ ! -f "$venv/.meshguard-stamp" ] || [ "$(cat "$venv/.meshguard-stamp")" != "$stamp" ]; then
  echo "-- preparing $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3.11 has no ensurepip without python3.11-venv: a bare virtualenv, and the
    # interpreter's own pip installs pip into it.
    rm -rf "$venv"
    "$python" -m venv --without-pip "$venv"
    "$python" -m pip --python "$venv/bin/python" install --quiet "pip==26.3"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip==26.3"
  # Every package is pinned, so nothing is resolved; `pip check` proves the set complete.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    -r python/requirements-mcp.txt
  "$venv/bin/python" -m pip check
  echo "$stamp" > "$venv/.meshguard-stamp"
fi

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
