#!/usr/bin/env bash
# Browser tests of the web console (tests/console/): Playwright for Python driving Debian's
# chromium against the real `meshguard serve` on a free port with a temporary data dir.
#   .venv-console   Playwright and pytest, pinned in tests/console/requirements.txt
#   /usr/bin/chromium   installed by scripts/tools.sh when missing (Playwright cannot download
#                       its own browser here)
# Environment:
#   PYTHON=python3.11   interpreter for the virtualenv
#   MESHGUARD_BIN=...   binary under test (default target/debug/meshguard, built when missing)
#   MESHGUARD_CONSOLE_SCREENSHOTS=docs/console   also refresh the committed screenshots
# Arguments are passed to pytest: scripts/test-console.sh -k approve -x
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
python="${PYTHON:-python3.11}"
venv=.venv-console

# shellcheck source=scripts/pinned-venv.sh
source scripts/pinned-venv.sh
pinned_venv "$venv" tests/console/requirements.txt

if [ ! -x /usr/bin/chromium ]; then
  bash scripts/tools.sh
fi

binary="${MESHGUARD_BIN:-$root/target/debug/meshguard}"
if [ ! -x "$binary" ]; then
  echo "-- building the gateway ($binary is missing)"
  cargo build -p meshguard
fi

if [ -x .venv/bin/ruff ]; then
  echo "-- ruff (tests/console)"
  .venv/bin/ruff check --config python/ruff.toml tests/console
  .venv/bin/ruff format --config python/ruff.toml --check tests/console
fi

echo "-- pytest (tests/console)"
MESHGUARD_BIN="$binary" "$root/$venv/bin/pytest" -p no:cacheprovider -ra tests/console "$@"
