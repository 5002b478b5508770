#!/usr/bin/env bash
# The one test command: every Rust suite (unit, integration, conformance, doc tests), then every
# Python suite in its own virtualenv. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# PostgreSQL and Redis for the shared-store suites (started when installed but stopped).
eval "$(bash scripts/services.sh)"

# Debian packages the suites drive (nginx for the forward-auth test), installed when missing.
bash scripts/tools.sh

# A CI run builds once from scratch: incremental state would only cost disk.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
fi

# The whole run (debug build, Python virtualenvs) needs about 2 GiB: say so up front when it is short.
avail_kib="$(df -Pk . | awk 'NR == 2 {print $4}')"
if [ "${avail_kib:-0}" -lt 2500000 ]; then
  echo "warning: $((avail_kib / 1024)) MiB free on this disk; the test run needs about 2 GiB" >&2
fi

echo "== Rust: format and lints =="
# The workspace lints (no unwrap, no panic, no indexing on input) mean something only if a
# machine runs them: formatting and clippy fail the run like a failing test.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Rust: build =="
# Build every target once (tests, benches, examples); the suites below reuse the build.
cargo build --workspace --all-targets --locked

echo "== Rust: tests =="
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
cargo test --workspace --locked --doc

echo "== Packaging =="
scripts/test-packaging.sh

if [ -x scripts/test-python.sh ]; then
  echo "== Python =="
  scripts/test-python.sh
fi

if [ -x scripts/test-console.sh ]; then
  echo "== Console in a browser =="
  scripts/test-console.sh
fi

if [ -x scripts/test-mcp.sh ]; then
  echo "== MCP proxy end to end =="
  scripts/test-mcp.sh
fi

if [ -x scripts/test-typescript.sh ]; then
  echo "== TypeScript SDK =="
  scripts/test-typescript.sh
fi
