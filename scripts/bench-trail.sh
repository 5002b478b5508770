#!/usr/bin/env bash
# The audit trail at scale: fills a release gateway's trail (SQLite, durable audit) with checks
# under wrk load for SECONDS, then times what operators run on it, each against a baseline
# measured on the same database in the same run:
#   - `meshguard audit stats --period 1` (rollups) against the count over the events that stats
#     ran before rollups (sqlite3, the same SQL);
#   - `meshguard audit verify --full` (every chain recomputed, every checkpoint checked) in events
#     per second, against sqlite3 reading every row of the same table (the floor of any walk);
#   - routine `meshguard audit verify` (from the last verified checkpoint);
#   - `meshguard audit export` (JSON lines) in events per second, and `audit verify --file` of
#     that export offline with the public key.
# With BACKEND=postgres the gateway stores everything in a fresh PostgreSQL database (created on
# the server of scripts/services.sh and dropped at exit), and the baselines run in psql.
# Usage: [SKIP_BUILD=1] [BACKEND=sqlite|postgres] scripts/bench-trail.sh [SECONDS=60] [CONNECTIONS=32]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-60}"
connections="${2:-32}"
target_dir="${CARGO_TARGET_DIR:-target}"
backend="${BACKEND:-sqlite}"
for tool in wrk sqlite3 psql; do
  command -v "$tool" >/dev/null || { echo "$tool is required (apt-get install -y $tool)" >&2; exit 1; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p meshguard --bin meshguard
fi
bin="$target_dir/release/meshguard"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

mkdir -p "$work/policies"
cat > "$work/policies/trail.yaml" <<'YAML'
name: trail-bench
version: "1"
appliesTo:
  tags: [trail-bench]
rules:
  - effect: allow
    actions: ["browse:web"]
  - effect: deny
    actions: ["execute:shell"]
defaultEffect: deny
YAML
admin_token="trail-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
port="$(free_port)"
data="$work/data"
store_args=()
if [ "$backend" = postgres ]; then
  eval "$(bash scripts/services.sh)"
  server="${MESHGUARD_TEST_DATABASE_URL%/*}"
  database="meshguard_trail_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
  psql -q "$server/postgres" -c "CREATE DATABASE $database"
  drop_database() { psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true; }
  trap 'cleanup; drop_database' EXIT
  store_args=(--database-url "$server/$database")
fi
# The database's own client, which runs the baselines' SQL.
if [ "$backend" = postgres ]; then
  sql=(psql -qAt "$server/$database" -c)
else
  sql=(sqlite3 "$data/meshguard.db")
fi
MESHGUARD_ADMIN_TOKEN="$admin_token" RUST_LOG=warn "$bin" --data-dir "$data" serve \
  --addr "127.0.0.1:$port" --policies "$work/policies" "${store_args[@]}" >"$work/gateway.log" 2>&1 &
pids+=("$!")
url="http://127.0.0.1:$port"
wait_until curl -fsS "$url/health"
export MESHGUARD_TOKEN
MESHGUARD_TOKEN="$(curl -fsS -X POST "$url/admin/agents" -H "X-Admin-Token: $admin_token" \
  -H 'Content-Type: application/json' \
  -d '{"name": "trail-bench", "trustTier": "verified", "tags": ["trail-bench"]}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
write_check_script '{"action": "browse:web", "resource": "https://example.com/a", "context": {}}'
echo "filling the trail for ${duration}s with $connections connections..." >&2
wrk -t2 -c"$connections" -d"${duration}s" -s "$work/check.lua" "$url/proxy/governance/check" >/dev/null

if [ "$backend" = postgres ]; then
  # Autovacuum analyzes a table within a minute of this much change; the timings below are of
  # the plans a gateway that has run that long gets, not of a trail seconds old.
  "${sql[@]}" "ANALYZE"
fi
cli() { "$bin" --url "$url" --admin-token "$admin_token" "$@"; }
# Seconds (3 decimals) one command takes, best of 3.
best_of_3() {
  python3 - "$@" <<'PY'
import subprocess, sys, time
best = None
for _ in range(3):
    started = time.perf_counter()
    subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
    took = time.perf_counter() - started
    best = took if best is None else min(best, took)
print(f"{best:.3f}")
PY
}
events="$(cli audit stats --period 1 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])')"
now_us="$(python3 -c 'import time; print(int(time.time() * 1e6))')"
from_us=$((now_us - 3600 * 1000000))
# Rows name their outcome (kind, decision, …) by number: the count joins it, as reads do.
events_sql="audit_events e LEFT JOIN audit_outcomes o ON o.outcome = e.outcome WHERE COALESCE(e.kind, o.kind) = 'check' AND e.ts >= $from_us AND e.ts < $now_us"
decision="COALESCE(e.decision, o.decision)"
old_sql="SELECT COUNT(*), SUM(CASE WHEN $decision = 'allow' THEN 1 ELSE 0 END), SUM(CASE WHEN $decision = 'deny' THEN 1 ELSE 0 END) FROM $events_sql; SELECT e.action, COUNT(*) AS n FROM $events_sql AND $decision = 'deny' GROUP BY e.action ORDER BY n DESC LIMIT 10;"
stats_new="$(best_of_3 "$bin" --url "$url" --admin-token "$admin_token" audit stats --period 1 --json)"
stats_old="$(best_of_3 "${sql[@]}" "$old_sql")"
verify="$(best_of_3 "$bin" --url "$url" --admin-token "$admin_token" audit verify --full)"
read_rows="$(best_of_3 "${sql[@]}" "SELECT * FROM audit_events")"
routine="$(best_of_3 "$bin" --url "$url" --admin-token "$admin_token" audit verify)"
export_s="$(best_of_3 "$bin" --url "$url" --admin-token "$admin_token" audit export)"
cli audit export > "$work/trail.jsonl"
offline="$(best_of_3 "$bin" audit verify --file "$work/trail.jsonl" --key "$data/signing-key.pub.pem")"
if [ "$backend" = postgres ]; then
  db_bytes="$("${sql[@]}" "SELECT pg_database_size(current_database())")"
else
  db_bytes="$(stat -c %s "$data/meshguard.db")"
  # Where the bytes are: each table and index of the audit trail (SQLite's dbstat).
  sqlite3 "$data/meshguard.db" "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8" \
    >"$work/dbstat.txt" 2>/dev/null || true
fi
python3 - "$events" "$stats_new" "$stats_old" "$verify" "$export_s" "$read_rows" "$routine" "$offline" "$db_bytes" "$backend" "$work/dbstat.txt" <<'PY'
import os, sys
events = int(sys.argv[1])
stats_new, stats_old, verify, export, read_rows, routine, offline = map(float, sys.argv[2:9])
db_bytes = int(sys.argv[9])
backend, dbstat = sys.argv[10], sys.argv[11]
print(f"{events:,} checks in the trail ({backend}), best of 3 runs each\n")
print("| what | seconds | rate or ratio |")
print("|---|---:|---:|")
print(f"| `audit stats --period 1` (rollups) | {stats_new:.3f} | {stats_old / stats_new:.1f}x faster than the count |")
print(f"| the count over the events it replaces (same SQL in {backend}, baseline) | {stats_old:.3f} | 1 |")
print(f"| `audit verify --full` | {verify:.3f} | {events / verify:,.0f} events/s, {read_rows / verify:.2f}x the row read |")
print(f"| reading every row in {backend}'s own client (baseline) | {read_rows:.3f} | {events / read_rows:,.0f} rows/s |")
print(f"| `audit verify` (routine, from the last verified checkpoint) | {routine:.3f} | {verify / routine:.0f}x faster than --full |")
print(f"| `audit export` | {export:.3f} | {events / export:,.0f} events/s |")
print(f"| `audit verify --file` of the export, offline | {offline:.3f} | {events / offline:,.0f} events/s |")
print(f"\nDatabase: {db_bytes / events:.0f} bytes per check (with its indexes and rollups)")
if os.path.exists(dbstat) and os.path.getsize(dbstat):
    print("\n| table or index | bytes per check |\n|---|---:|")
    for line in open(dbstat):
        name, size = line.strip().rsplit("|", 1)
        print(f"| {name} | {int(size) / events:.0f} |")
PY
