#!/usr/bin/env bash
# MCP latency benchmark: the added latency of one tool call through `meshguard mcp run` and
# through the gateway-hosted `/mcp/S` endpoint, against calling the same server directly, in one
# run (release build, durable SQLite audit, loopback). Prints the table of docs/benchmarks.md
# ("MCP tool calls").
# Usage: [SKIP_BUILD=1] [AUDIT_DURABILITY=sync|async] scripts/bench-mcp.sh [CALLS=500]
set -euo pipefail
cd "$(dirname "$0")/.."
calls="${1:-500}"
target_dir="${CARGO_TARGET_DIR:-target}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p meshguard --bin meshguard
fi
# The client (the official MCP SDK) and the reference servers, as the end-to-end tests pin them.
if [ ! -x .venv-mcp/bin/python ] || [ ! -x tests/mcp/node_modules/.bin/mcp-server-everything ]; then
  scripts/test-mcp.sh --collect-only -q >/dev/null
fi
.venv-mcp/bin/python scripts/bench_mcp.py "$target_dir/release/meshguard" "$calls"
