#!/usr/bin/env bash
# Rate-limit backend cost: the release `meshguard serve` with every check charged to a policy
# limit, counted in memory (one gateway) and in Redis (`--redis-url`, shared by gateways), loaded
# the same way in the same run. Audit durability is `async` in both, so that the figure is the
# limiter's and not the disk's. Loopback only, bounded duration.
# Usage: [SKIP_BUILD=1] [REDIS_URL=redis://127.0.0.1:6379] scripts/bench-ratelimit.sh [SECONDS=15] [CONNECTIONS=32]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15}"
connections="${2:-32}"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
target_dir="${CARGO_TARGET_DIR:-target}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install -y wrk)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is required to check Redis" >&2; exit 1; }
redis-cli -u "$redis_url" ping >/dev/null || { echo "Redis does not answer at $redis_url" >&2; exit 1; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p meshguard --bin meshguard
fi
gateway_bin="$target_dir/release/meshguard"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

check_body='{"action": "browse:web", "resource": "https://python.org/downloads", "context": {}}'

# Limits high enough never to be reached, so that every check is charged and admitted: two
# counters per check (the policy's and the rule's), as in the production example.
mkdir -p "$work/policies"
cat > "$work/policies/ratelimit-bench.yaml" <<'YAML'
name: ratelimit-bench
version: "1"
appliesTo:
  tags: [ratelimit-bench]
rules:
  - effect: allow
    actions: ["browse:web", "search:web"]
    conditions:
      rateLimit: {requestsPerMinute: 100000000}
defaultEffect: deny
rateLimits:
  requestsPerMinute: 100000000
YAML

admin_token="ratelimit-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# Starts a gateway (extra flags in "$@") in its own data dir; sets $gateway and exports the token.
start_gateway() {
  local name="$1" port
  shift
  port="$(free_port)"
  MESHGUARD_ADMIN_TOKEN="$admin_token" MESHGUARD_AUDIT__DURABILITY=async RUST_LOG=warn \
    "$gateway_bin" --data-dir "$work/data-$name" serve \
    --addr "127.0.0.1:$port" --policies "$work/policies" "$@" >"$work/gateway-$name.log" 2>&1 &
  pids+=("$!")
  gateway="http://127.0.0.1:$port"
  wait_until curl -fsS "$gateway/health"
  MESHGUARD_TOKEN="$(curl -fsS -X POST "$gateway/admin/agents" -H "X-Admin-Token: $admin_token" \
    -H 'Content-Type: application/json' \
    -d "{\"name\": \"bench-$name-$RANDOM\", \"trustTier\": \"verified\", \"tags\": [\"ratelimit-bench\"]}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
  export MESHGUARD_TOKEN
}

write_check_script "$check_body"

start_gateway memory
read -r m_rps m_p50 m_p99 _ m_bad _ < <(wrk_load "$gateway/proxy/governance/check")
start_gateway redis --redis-url "$redis_url"
read -r r_rps r_p50 r_p99 _ r_bad _ < <(wrk_load "$gateway/proxy/governance/check")
if [ "$m_bad" != 0 ] || [ "$r_bad" != 0 ]; then
  echo "non-200 answers under load: memory $m_bad, redis $r_bad" >&2
  exit 1
fi

python3 - "$m_rps" "$m_p50" "$m_p99" "$r_rps" "$r_p50" "$r_p99" "$duration" "$connections" <<'PY'
import sys
m_rps, m_p50, m_p99, r_rps, r_p50, r_p99 = map(float, sys.argv[1:7])
print(f"wrk -t2 -c{sys.argv[8]} -d{sys.argv[7]}s, loopback, same run, audit durability async\n")
print("| rate limits counted | checks/s | p50 | p99 |")
print("|---|---:|---:|---:|")
print(f"| in memory (per gateway) | {m_rps:,.0f} | {m_p50:.2f} ms | {m_p99:.2f} ms |")
print(f"| in Redis (`--redis-url`, shared) | {r_rps:,.0f} | {r_p50:.2f} ms | {r_p99:.2f} ms |")
print(f"\nRedis ÷ memory throughput: {r_rps / m_rps:.3f}")
PY
