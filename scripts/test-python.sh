#!/usr/bin/env bash
# Every Python suite: lint (ruff), type check (mypy, python/mypy.ini: strict on the SDK), then
# pytest over python/ against the real gateway binary.
#   .venv         the SDK, the AutoGPT plugin and wrapper, classic AutoGPT (agpt 0.2.2) pinned
#   .venv-sdk012  MeshGuard's published SDK 0.1.2, unmodified, for the compatibility tests
# Works on a machine with nothing but python3.11 (and pip). Environment:
#   PYTHON=python3.11   interpreter for the virtualenvs
#   MESHGUARD_BIN=...   gateway binary (default target/debug/meshguard, built when missing)
# Arguments are passed to pytest: scripts/test-python.sh -k "docs_page or plugin" -x
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
python="${PYTHON:-python3.11}"

# Reinstall a virtualenv only when its pinned inputs changed, so repeated runs start at once.
ensure_venv() { # DIR STAMP INSTALL-FUNCTION
  local dir="$1" stamp="$2" install="$3"
  if [ -f "$dir/.meshguard-stamp" ] && [ "$(cat "$dir/.meshguard-stamp")" = "$stamp" ]; then
    return
  fi
  echo "-- preparing $dir"
  rm -rf "$dir"
  if ! "$python" -m venv "$dir" 2>/dev/null; then
    # Debian ships python3.11 without ensurepip unless python3.11-venv is installed: make the
    # virtualenv bare and let the interpreter's own pip install pip into it.
    rm -rf "$dir"
    "$python" -m venv --without-pip "$dir"
    "$python" -m pip --python "$dir/bin/python" install --quiet "pip==26.3"
  fi
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip==26.3"
  "$install" "$dir"
  echo "$stamp" > "$dir/.meshguard-stamp"
}

install_main() {
  local pip=("$1/bin/python" -m pip install --quiet --disable-pip-version-check)
  # AutoGPT's own dependency metadata pulls far more than it needs (some of it does not build):
  # the pinned set is installed without resolution, as classic AutoGPT users do.
  "${pip[@]}" --no-deps -r python/requirements-autogpt.txt
  "${pip[@]}" --no-deps -r python/requirements-test.txt
  "${pip[@]}" --no-deps --no-build-isolation -e python/meshguard -e python/autogpt-meshguard-plugin
}

install_sdk012() {
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    -r python/requirements-sdk012.txt
}

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

ensure_venv .venv "$(hash_of python/requirements-*.txt python/*/pyproject.toml)" install_main
ensure_venv .venv-sdk012 "$(hash_of python/requirements-sdk012.txt)" install_sdk012

binary="${MESHGUARD_BIN:-$root/target/debug/meshguard}"
if [ ! -x "$binary" ]; then
  echo "-- building the gateway ($binary is missing)"
  cargo build -p meshguard
fi

echo "-- ruff"
.venv/bin/ruff check python
.venv/bin/ruff format --check python

echo "-- mypy"
# The packages' typing is part of their API (both ship py.typed): a type error fails the run.
(cd python && "$root/.venv/bin/mypy")

echo "-- pytest"
workers="$("$python" -c 'import os; print(max(2, min(4, os.cpu_count() or 2)))')"
status=0
(
  cd python
  PATH="$root/.venv/bin:$PATH" MESHGUARD_BIN="$binary" \
    MESHGUARD_SDK012_PYTHON="$root/.venv-sdk012/bin/python" \
    "$root/.venv/bin/pytest" -n "$workers" "$@"
) || status=$?
if [ "$status" -eq 5 ]; then
  # 5 = no test collected: fine when the arguments filtered everything out, a broken setup if not.
  if [ "$#" -gt 0 ]; then
    echo "-- no test matched: $*"
    exit 0
  fi
  echo "pytest collected no tests: the suites are missing" >&2
  exit 1
fi
exit "$status"
