#!/usr/bin/env bash
# Soak and fault run: two release `meshguard serve` gateways on one PostgreSQL database and one
# Redis, under mixed load (checks, approvals, admin changes, reverse-proxy requests, audit
# followers, slow clients holding half-open connections) for N minutes while PostgreSQL is
# restarted, Redis is stopped for 10 s and a gateway is killed with -9 and restarted on its data
# dir. At the end (scripts/soak_load.py verify; the list is in docs/benchmarks.md, "Soak and
# faults"): both gateways recovered; every acknowledged decision, and every request the upstream
# received, is in the audit trail; no 503 has an event; `meshguard audit verify` passes through
# both gateways; nothing was allowed while a dependency the decision needed was down; no revoked
# agent, denied approval or denied proxy request got through; every audit follower received
# every event committed while it was connected; each gateway's RSS stayed flat after warm-up.
# Exit 1 with the reasons when any of it fails.
#
# Loopback only, and self-contained: it starts its OWN PostgreSQL cluster (initdb in a temp dir,
# trust auth, a free port, its socket in the temp dir) and its OWN redis-server (free port, no
# persistence), never the servers on 5432/6379, and removes everything on exit.
# Every step has a time limit and every loop a bound.
#
# Usage: [SKIP_BUILD=1] [KEEP_WORK=1] scripts/soak.sh [--minutes N] [--slow-clients N]
#   --minutes N        length of the load, at least 2 (default 3); faults repeat every ~60 s
#   --slow-clients N   half-open connections held per gateway (default 64)
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=3
slow_clients=64
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="${2:?--minutes needs a number}"; shift 2 ;;
    --slow-clients) slow_clients="${2:?--slow-clients needs a number}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
case "$minutes" in '' | *[!0-9]*) echo "--minutes must be a whole number, not \`$minutes\`" >&2; exit 2 ;; esac
case "$slow_clients" in '' | *[!0-9]*) echo "--slow-clients must be a whole number" >&2; exit 2 ;; esac
if [ "$minutes" -lt 2 ]; then echo "--minutes must be at least 2 (one round of faults)" >&2; exit 2; fi
seconds=$((minutes * 60))

pg_bin="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
for tool in "$pg_bin/initdb" "$pg_bin/pg_ctl" "$pg_bin/createdb"; do
  [ -x "$tool" ] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)" >&2; exit 1; }
done
for tool in redis-server redis-cli python3 curl timeout; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

target_dir="${CARGO_TARGET_DIR:-target}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  timeout 3600 cargo build --release -p meshguard --bin meshguard
fi
meshguard="$target_dir/release/meshguard"
[ -x "$meshguard" ] || { echo "no release binary at $meshguard" >&2; exit 1; }

# free_port, wait_until, $work and $pids (its EXIT trap is replaced below).
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
chmod 0711 "$work"   # the PostgreSQL server user must reach its dir inside

# PostgreSQL refuses to run as root: run its tools as `postgres` then.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || { echo "running as root needs a \`postgres\` user for the soak cluster" >&2; exit 1; }
  as_pg=(runuser -u postgres --)
fi
pg_dir="$work/pg"
mkdir -p "$pg_dir"
[ "${#as_pg[@]}" = 0 ] || chown postgres "$pg_dir"
pg_port="$(free_port)"
redis_port="$(free_port)"
upstream_port="$(free_port)"
port_a="$(free_port)"
port_b="$(free_port)"
pg_url="postgres://postgres@127.0.0.1:$pg_port/meshguard_soak"
redis_url="redis://127.0.0.1:$redis_port"
faults="$work/faults.log"
: >"$faults"
redis_pid=""

# Gateways and the load first (a gateway's graceful stop may still write to PostgreSQL), then
# Redis and PostgreSQL, then the work dir. Bounded: whatever has not exited after 10 s is killed.
soak_cleanup() {
  local status=$? pid
  for pid in "${pids[@]}" $redis_pid; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    jobs -pr | grep -q . || break
    sleep 0.1
  done
  for pid in $(jobs -pr); do kill -9 "$pid" 2>/dev/null || true; done
  timeout 30 "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
  exit "$status"
}
trap soak_cleanup EXIT

note() { echo "$(date +%s.%N) $*" >>"$faults"; }
say() { echo "[soak $(date +%T)] $*" >&2; }

pgctl() { timeout 60 "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" "$@"; }
pg_start() {
  pgctl -w -t 30 -l "$pg_dir/server.log" \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
}
redis_start() {
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    >>"$work/redis.log" 2>&1 &
  redis_pid="$!"
  wait_until redis-cli -p "$redis_port" ping
}
redis_stop() {
  timeout 10 redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || kill -9 "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
}

# start_gateway a|b: starts it on its port and data dir (the same ones after a kill) and waits
# for /health.
start_gateway() {
  local name="$1" port
  if [ "$name" = a ]; then port="$port_a"; else port="$port_b"; fi
  MESHGUARD_ADMIN_TOKEN="$admin_token" RUST_LOG=warn \
    "$meshguard" --data-dir "$work/data-$name" serve --addr "127.0.0.1:$port" \
    --config "$work/gateway.toml" --database-url "$pg_url" --redis-url "$redis_url" \
    >>"$work/gateway-$name.log" 2>&1 &
  echo "$!" >"$work/gateway-$name.pid"
  pids+=("$!")
  if ! wait_until curl -fsS "http://127.0.0.1:$port/health"; then
    tail -n 20 "$work/gateway-$name.log" >&2
    echo "gateway $name did not start (its log above)" >&2
    exit 1
  fi
}
kill_gateway() {
  local name="$1" pid
  pid="$(cat "$work/gateway-$name.pid")"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
}

say "work dir $work; PostgreSQL on $pg_port, Redis on $redis_port, gateways on $port_a and $port_b"
timeout 120 "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U postgres >"$pg_dir/initdb.log" 2>&1
pg_start
timeout 30 "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres meshguard_soak
redis_start

python3 scripts/soak_load.py upstream "$upstream_port" >"$work/upstream.log" 2>&1 &
pids+=("$!")
wait_until curl -fsS "http://127.0.0.1:$upstream_port/__soak/stats"
cat >"$work/gateway.toml" <<TOML
[targets.upstream]
url = "http://127.0.0.1:$upstream_port"
headers = { X-Soak-Credential = "soak-upstream-secret" }
TOML

admin_token="soak-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export MESHGUARD_ADMIN_TOKEN="$admin_token"
start_gateway a
# Gateway B shares A's signing key (docs/operations.md, several gateways), not its gateway.id.
mkdir -m 0700 "$work/data-b"
cp -p "$work/data-a/signing-key.pem" "$work/data-b/"
start_gateway b
gateways="http://127.0.0.1:$port_a,http://127.0.0.1:$port_b"
agent_token="$(timeout 30 python3 scripts/soak_load.py setup --gateway "http://127.0.0.1:$port_a")"

say "load for $seconds s"
python3 scripts/soak_load.py run --gateways "$gateways" \
  --pid-files "$work/gateway-a.pid,$work/gateway-b.pid" --agent-token "$agent_token" \
  --seconds "$seconds" --slow-clients "$slow_clients" --out "$work/results.json" &
load_pid="$!"
pids+=("$load_pid")

# Faults, one at a time, in rounds of about a minute after a 20 s warm-up, leaving 20 s at the end.
pause() { sleep "$1"; kill -0 "$load_pid" 2>/dev/null || { echo "the load generator stopped early" >&2; exit 1; }; }
rounds=$(((seconds - 40) / 60))
[ "$rounds" -ge 1 ] || rounds=1
pause 20
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then mode=fast victim=b; else mode=immediate victim=a; fi
  say "round $round: PostgreSQL stop ($mode), 10 s down"
  pgctl -m "$mode" stop >/dev/null
  note down postgres "$mode"
  pause 10
  note up postgres
  pg_start
  pause 12
  say "round $round: Redis stopped for 10 s"
  redis_stop
  note down redis
  pause 10
  note up redis
  redis_start
  pause 12
  say "round $round: kill -9 gateway $victim, restart on its data dir"
  note kill "gateway-$victim"
  kill_gateway "$victim"
  start_gateway "$victim"
  note restarted "gateway-$victim"
  pause 14
done

# The load ends on its own at its deadline (plus its request timeout); bounded wait.
for _ in $(seq 1 $((seconds + 120))); do
  kill -0 "$load_pid" 2>/dev/null || break
  sleep 1
done
if kill -0 "$load_pid" 2>/dev/null; then echo "the load generator did not stop" >&2; exit 1; fi
wait "$load_pid"
# A gateway that exited without being killed by the schedule crashed.
for name in a b; do
  if ! kill -0 "$(cat "$work/gateway-$name.pid")" 2>/dev/null; then
    tail -n 20 "$work/gateway-$name.log" >&2
    echo "gateway $name exited on its own during the run (its log above)" >&2
    exit 1
  fi
done

say "verifying"
timeout 600 python3 scripts/soak_load.py verify --results "$work/results.json" --faults "$faults" \
  --upstream "http://127.0.0.1:$upstream_port" --meshguard "$meshguard"
