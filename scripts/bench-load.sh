#!/usr/bin/env bash
# Gateway load benchmark: `POST /proxy/governance/check` on the release `meshguard serve` (SQLite,
# durable audit: every answer waits for its audit event to commit), next to a bare axum handler
# (crates/gateway/examples/baseline_server.rs) loaded the same way in the same run. Loopback only,
# bounded duration; prints the table of docs/benchmarks.md ("Gateway load").
# With PG_URL set (a PostgreSQL server URL, e.g. postgres://postgres@127.0.0.1:5432/test), a
# further run loads a durable gateway on a fresh PostgreSQL database made for the run (and dropped).
# A durable gateway served over TLS (a self-signed certificate made with openssl) is loaded too,
# and the durable and async gateways with OpenTelemetry traces on, exporting every check's spans
# to a local OTLP sink (crates/gateway/examples/otlp_sink.rs) that accepts and drops them.
# Usage: [SKIP_BUILD=1] [PG_URL=…] scripts/bench-load.sh [SECONDS=15] [CONNECTIONS=32]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15}"
connections="${2:-32}"
target_dir="${CARGO_TARGET_DIR:-target}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install -y wrk)" >&2; exit 1; }

# Two builds: an example pulls in dev-dependencies, whose features must not leak into the gateway.
# SKIP_BUILD=1 measures the binaries already in the target dir.
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p meshguard --bin meshguard
  cargo build --release -p meshguard-gateway --example baseline_server --example otlp_sink
fi
gateway_bin="$target_dir/release/meshguard"
baseline_bin="$target_dir/release/examples/baseline_server"
sink_bin="$target_dir/release/examples/otlp_sink"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

check_body='{"action": "browse:web", "resource": "https://python.org/downloads", "context": {}}'

# The production example's rules without its rate limits, so that every check is decided by the
# rules (a rate-limited check would measure the limiter's early exit instead).
mkdir -p "$work/policies"
cat > "$work/policies/load-bench.yaml" <<'YAML'
name: load-bench
version: "1"
description: autogpt-production's rules without rate limits, for the load benchmark
appliesTo:
  tags: [load-bench]
rules:
  - effect: allow
    actions: ["browse:web", "search:web"]
  - effect: allow
    actions: ["read:workspace/*", "write:workspace/*"]
    conditions:
      resourcePattern: "workspace/*"
  - effect: allow
    actions: ["execute:python"]
    conditions:
      sandbox: true
  - effect: deny
    actions: ["execute:shell", "delete:*", "send:*", "pay:*", "admin:*"]
defaultEffect: deny
humanInTheLoop:
  requireApproval: ["send:email", "post:social", "pay:*"]
YAML

admin_token="load-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# Starts a gateway with the given audit durability (sync | async) in its own data dir (extra
# `serve` flags after it) and creates the agent; sets $gateway (its URL) and $agent_token.
start_gateway() {
  local durability="$1" port name
  shift
  port="$(free_port)"
  name="$durability-$port"
  local scheme=http curl_tls=()
  if [ -n "${tls:-}" ]; then
    scheme=https
    curl_tls=(--cacert "$work/tls/cert.pem")
    set -- "$@" --tls-cert "$work/tls/cert.pem" --tls-key "$work/tls/key.pem"
  fi
  MESHGUARD_ADMIN_TOKEN="$admin_token" MESHGUARD_AUDIT__DURABILITY="$durability" \
    MESHGUARD_AUDIT__LOG="${audit_log:-true}" RUST_LOG=warn \
    OTEL_EXPORTER_OTLP_ENDPOINT="${otel_endpoint:-}" \
    "$gateway_bin" --data-dir "$work/data-$name" serve \
    --addr "127.0.0.1:$port" --policies "$work/policies" "$@" >"$work/gateway-$name.log" 2>&1 &
  pids+=("$!")
  gateway="$scheme://127.0.0.1:$port"
  wait_until curl -fsS "${curl_tls[@]}" "$gateway/health"
  agent_token="$(curl -fsS "${curl_tls[@]}" -X POST "$gateway/admin/agents" -H "X-Admin-Token: $admin_token" \
    -H 'Content-Type: application/json' \
    -d '{"name": "load-bench", "trustTier": "verified", "tags": ["load-bench"]}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
  export MESHGUARD_TOKEN="$agent_token"
  # One check by hand first: the load must be allowed checks (200), or the numbers mean nothing.
  local status
  status="$(curl -sS "${curl_tls[@]}" -o "$work/first.json" -w '%{http_code}' -X POST "$gateway/proxy/governance/check" \
    -H "Authorization: Bearer $agent_token" -H 'Content-Type: application/json' -d "$check_body")"
  if [ "$status" != 200 ]; then
    echo "the gateway answered $status to the load's check: $(cat "$work/first.json")" >&2
    exit 1
  fi
}

baseline_port="$(free_port)"
"$baseline_bin" "127.0.0.1:$baseline_port" >"$work/baseline.log" 2>&1 &
pids+=("$!")
baseline="http://127.0.0.1:$baseline_port"
wait_until curl -fsS -X POST "$baseline/proxy/governance/check" -H 'Content-Type: application/json' -d "$check_body"

write_check_script "$check_body"

start_gateway sync
sync_gateway="$gateway"
read -r g_rps g_p50 g_p99 _ g_bad _ < <(wrk_load "$gateway/proxy/governance/check")
read -r b_rps b_p50 b_p99 _ b_bad _ < <(wrk_load "$baseline/proxy/governance/check")
# The same gateway with audit durability `async` (answers before the commit): what durability costs.
start_gateway async
read -r a_rps a_p50 a_p99 _ a_bad _ < <(wrk_load "$gateway/proxy/governance/check")
# Durable, without the audit write-ahead log (`audit.log = false`: each batch is a SQLite
# transaction, as before the log): what the log buys.
audit_log=false start_gateway sync
read -r n_rps n_p50 n_p99 _ n_bad _ < <(wrk_load "$gateway/proxy/governance/check")
# Durable, served over TLS (a self-signed certificate for 127.0.0.1; wrk keeps its connections,
# so this is the cost of encryption, not of handshakes).
mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
tls=1 start_gateway sync
read -r t_rps t_p50 t_p99 _ t_bad _ < <(wrk_load "$gateway/proxy/governance/check")
# OpenTelemetry on: every check's span and its four child spans exported to a local sink.
sink_port="$(free_port)"
"$sink_bin" "127.0.0.1:$sink_port" >"$work/otlp-sink.log" 2>&1 &
pids+=("$!")
sink_pid="$!"
wait_until bash -c "exec 3<>/dev/tcp/127.0.0.1/$sink_port"
otel_endpoint="http://127.0.0.1:$sink_port" start_gateway sync
read -r o_rps o_p50 o_p99 _ o_bad _ < <(wrk_load "$gateway/proxy/governance/check")
otel_endpoint="http://127.0.0.1:$sink_port" start_gateway async
read -r oa_rps oa_p50 oa_p99 _ oa_bad _ < <(wrk_load "$gateway/proxy/governance/check")
p_rps=0 p_p50=0 p_p99=0 p_bad=0
if [ -n "${PG_URL:-}" ]; then
  command -v psql >/dev/null || { echo "PG_URL needs psql" >&2; exit 1; }
  pg_db="mg_bench_$$_$RANDOM"
  psql -q "$PG_URL" -c "CREATE DATABASE $pg_db" >/dev/null
  drop_pg() { psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true; }
  trap 'cleanup; drop_pg' EXIT
  start_gateway sync --database-url "${PG_URL%/*}/$pg_db"
  read -r p_rps p_p50 p_p99 _ p_bad _ < <(wrk_load "$gateway/proxy/governance/check")
fi
if [ "$g_bad" != 0 ] || [ "$b_bad" != 0 ] || [ "$a_bad" != 0 ] || [ "$p_bad" != 0 ] || [ "$n_bad" != 0 ] || [ "$t_bad" != 0 ] || [ "$o_bad" != 0 ] || [ "$oa_bad" != 0 ]; then
  echo "non-200 answers under load: gateway $g_bad, baseline $b_bad, async gateway $a_bad, postgres gateway $p_bad, gateway without log $n_bad, TLS gateway $t_bad, OTel gateways $o_bad / $oa_bad" >&2
  exit 1
fi
audited="$(curl -fsS "$sync_gateway/admin/audit/stats?period=1" -H "X-Admin-Token: $admin_token" || echo '{}')"
# Every gateway stopped (flushing its last spans) before the sink says what it received.
for pid in "${pids[@]}"; do [ "$pid" = "$sink_pid" ] || kill "$pid" 2>/dev/null || true; done
sleep 2
kill "$sink_pid" 2>/dev/null || true
wait "$sink_pid" 2>/dev/null || true
otel_received="$(tail -1 "$work/otlp-sink.log")"

python3 - "$g_rps" "$g_p50" "$g_p99" "$b_rps" "$b_p50" "$b_p99" "$a_rps" "$a_p50" "$a_p99" \
  "$duration" "$connections" "$audited" "$p_rps" "$p_p50" "$p_p99" "$n_rps" "$n_p50" "$n_p99" \
  "$t_rps" "$t_p50" "$t_p99" "$o_rps" "$o_p50" "$o_p99" "$oa_rps" "$oa_p50" "$oa_p99" \
  "$otel_received" <<'PY'
import json, sys
g_rps, g_p50, g_p99, b_rps, b_p50, b_p99, a_rps, a_p50, a_p99 = map(float, sys.argv[1:10])
duration, connections, audited = sys.argv[10], sys.argv[11], sys.argv[12]
p_rps, p_p50, p_p99 = map(float, sys.argv[13:16])
n_rps, n_p50, n_p99 = map(float, sys.argv[16:19])
t_rps, t_p50, t_p99 = map(float, sys.argv[19:22])
o_rps, o_p50, o_p99, oa_rps, oa_p50, oa_p99 = map(float, sys.argv[22:28])
otel_received = sys.argv[28]
print(f"wrk -t2 -c{connections} -d{duration}s, loopback, same run\n")
print("| server | checks/s | p50 | p99 |")
print("|---|---:|---:|---:|")
print(f"| meshguard serve (SQLite, durable audit) | {g_rps:,.0f} | {g_p50:.2f} ms | {g_p99:.2f} ms |")
print(f"| bare axum handler (baseline) | {b_rps:,.0f} | {b_p50:.2f} ms | {b_p99:.2f} ms |")
print(f"| meshguard serve, audit durability async | {a_rps:,.0f} | {a_p50:.2f} ms | {a_p99:.2f} ms |")
print(f"| meshguard serve (SQLite, durable audit, audit.log = false) | {n_rps:,.0f} | {n_p50:.2f} ms | {n_p99:.2f} ms |")
print(f"| meshguard serve (SQLite, durable audit) over TLS | {t_rps:,.0f} | {t_p50:.2f} ms | {t_p99:.2f} ms |")
print(f"| meshguard serve (SQLite, durable audit), OpenTelemetry on | {o_rps:,.0f} | {o_p50:.2f} ms | {o_p99:.2f} ms |")
print(f"| meshguard serve, audit durability async, OpenTelemetry on | {oa_rps:,.0f} | {oa_p50:.2f} ms | {oa_p99:.2f} ms |")
if p_rps:
    print(f"| meshguard serve (PostgreSQL, durable audit) | {p_rps:,.0f} | {p_p50:.2f} ms | {p_p99:.2f} ms |")
print(f"\ngateway (durable audit) ÷ baseline throughput: {g_rps / b_rps:.3f}")
if p_rps:
    print(f"gateway on PostgreSQL (durable audit) ÷ baseline throughput: {p_rps / b_rps:.3f}")
print(f"gateway (async audit) ÷ baseline throughput: {a_rps / b_rps:.3f}")
print(f"gateway (durable audit, no log) ÷ baseline throughput: {n_rps / b_rps:.3f}")
print(f"gateway over TLS ÷ the same over plain HTTP: {t_rps / g_rps:.3f}")
print(f"durable gateway with OpenTelemetry on ÷ off: {o_rps / g_rps:.3f} (÷ baseline {o_rps / b_rps:.3f})")
print(f"async gateway with OpenTelemetry on ÷ off: {oa_rps / a_rps:.3f} (÷ baseline {oa_rps / b_rps:.3f})")
print(f"OTLP sink: {otel_received}")
try:
    print(f"audit stats of the durable gateway after its run: {json.dumps(json.loads(audited))[:300]}")
except ValueError:
    pass
PY
