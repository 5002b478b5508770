#!/usr/bin/env bash
# Every Python suite: lint (ruff), type check (mypy, python/mypy.ini: strict on the SDK), then
# pytest over python/ against the real gateway binary.
#   .venv         the SDK, the AutoGPT plugin and wrapper, classic AutoGPT (agpt 0.2.2) pinned
#   .venv-sdk012  MeshGuard's published SDK 0.1.2, unmodified, for the compatibility tests
#   .venv-<fw>    one per agent framework adapter (python/requirements-framework-<fw>.txt): the
#                 frameworks pin a modern openai that cannot live beside AutoGPT's 0.27, nor
#                 always beside each other; each runs meshguard/tests/integrations/<fw>/
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

install_framework() {
  local pip=("$1/bin/python" -m pip install --quiet --disable-pip-version-check)
  # Each framework file is a complete, pinned set (pip freeze of a resolved install): it is
  # installed without resolution so that a new release upstream cannot change what is tested.
  "${pip[@]}" --no-deps -r "$framework_requirements"
  "${pip[@]}" --no-deps -r python/requirements-test.txt
  "${pip[@]}" --no-deps --no-build-isolation -e python/meshguard
}

ensure_venv .venv "$(hash_of python/requirements-[!f]*.txt python/*/pyproject.toml)" install_main
ensure_venv .venv-sdk012 "$(hash_of python/requirements-sdk012.txt)" install_sdk012
frameworks=()
for framework_requirements in python/requirements-framework-*.txt; do
  [ -f "$framework_requirements" ] || continue
  framework="${framework_requirements#python/requirements-framework-}"
  framework="${framework%.txt}"
  frameworks+=("$framework")
  ensure_venv ".venv-$framework" \
    "$(hash_of "$framework_requirements" python/requirements-test.txt python/meshguard/pyproject.toml)" \
    install_framework
done

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
# A framework adapter is checked where its framework is installed (python/mypy.ini leaves it out
# of the run above).
for framework in "${frameworks[@]}"; do
  (cd python && "$root/.venv-$framework/bin/mypy" "meshguard/src/meshguard/integrations/$framework.py")
done

echo "-- pytest"
workers="$("$python" -c 'import os; print(max(2, min(4, os.cpu_count() or 2)))')"
status=0
(
  cd python
  PATH="$root/.venv/bin:$PATH" MESHGUARD_BIN="$binary" \
    MESHGUARD_SDK012_PYTHON="$root/.venv-sdk012/bin/python" \
    "$root/.venv/bin/pytest" -n "$workers" --ignore=meshguard/tests/integrations "$@"
) || status=$?
# Each framework's suite in its own virtualenv (5 = nothing collected, judged below).
for framework in "${frameworks[@]}"; do
  echo "-- pytest: $framework"
  (
    cd python
    PATH="$root/.venv-$framework/bin:$PATH" MESHGUARD_BIN="$binary" \
      "$root/.venv-$framework/bin/pytest" -n "$workers" "meshguard/tests/integrations/$framework" "$@"
  ) || { framework_status=$?; [ "$framework_status" -eq 5 ] || status=$framework_status; }
done
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
