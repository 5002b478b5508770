#!/usr/bin/env bash
# Alert benchmark: check latency of the release `meshguard serve` when every check raises an alert,
# in the same run: (a) alerts off, (b) alerts to a webhook that accepts connections and never
# answers (a hanging receiver), (c) alerts to a webhook that answers 200 at once. Every check is
# denied (`execute:shell`), so every check hands an alert to the queue; the per-trigger rate limit
# is lifted so the queue itself is stressed. Loopback only, bounded duration; prints the table of
# docs/benchmarks.md ("Alerts"). The three gateways run side by side and are loaded in turn,
# ROUNDS times (interleaved, so that load from other processes on the machine hits all three
# alike); the table gives the median round and the range.
# Usage: [SKIP_BUILD=1] [ROUNDS=3] scripts/bench-alerts.sh [SECONDS=15] [CONNECTIONS=32]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15}"
connections="${2:-32}"
rounds="${ROUNDS:-3}"
target_dir="${CARGO_TARGET_DIR:-target}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install -y wrk)" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p meshguard --bin meshguard
fi
gateway_bin="$target_dir/release/meshguard"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

# The hanging receiver: accepts every connection, reads nothing, never answers (bounded lifetime).
hang_port="$(free_port)"
python3 - "$hang_port" <<'PY' &
import socket, sys, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(1024)
server.settimeout(1.0)
held, deadline = [], time.time() + 900
while time.time() < deadline:
    try:
        held.append(server.accept()[0])
    except socket.timeout:
        pass
PY
pids+=("$!")

# The answering receiver: 200 at once to every POST.
ok_port="$(free_port)"
python3 - "$ok_port" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
PY
pids+=("$!")

mkdir -p "$work/policies"
cat > "$work/policies/alert-bench.yaml" <<'YAML'
name: alert-bench
version: "1"
appliesTo:
  tags: [alert-bench]
rules:
  - name: no-shell
    effect: deny
    actions: ["execute:shell"]
defaultEffect: deny
YAML
check_body='{"action": "execute:shell", "resource": "ls", "context": {}}'
admin_token="alert-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# start_gateway NAME [WEBHOOK_URL]: sets $gateway and exports MESHGUARD_TOKEN.
start_gateway() {
  local name="$1" hook="${2:-}" port status
  port="$(free_port)"
  (
    export MESHGUARD_ADMIN_TOKEN="$admin_token" RUST_LOG=warn
    if [ -n "$hook" ]; then
      export ALERT_WEBHOOK_URL="$hook" ALERT_WEBHOOK_SECRET=bench ALERT_ON=deny \
        MESHGUARD_ALERTS__PER_MINUTE=1000000000
    fi
    exec "$gateway_bin" --data-dir "$work/data-$name" serve --addr "127.0.0.1:$port" \
      --policies "$work/policies"
  ) >"$work/gateway-$name.log" 2>&1 &
  pids+=("$!")
  gateway="http://127.0.0.1:$port"
  wait_until curl -fsS "$gateway/health"
  MESHGUARD_TOKEN="$(curl -fsS -X POST "$gateway/admin/agents" -H "X-Admin-Token: $admin_token" \
    -H 'Content-Type: application/json' \
    -d '{"name": "alert-bench", "trustTier": "verified", "tags": ["alert-bench"]}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"
  export MESHGUARD_TOKEN
  status="$(curl -sS -o "$work/first.json" -w '%{http_code}' -X POST "$gateway/proxy/governance/check" \
    -H "Authorization: Bearer $MESHGUARD_TOKEN" -H 'Content-Type: application/json' -d "$check_body")"
  if [ "$status" != 403 ]; then
    echo "the gateway answered $status to the load's check (expected a 403 deny): $(cat "$work/first.json")" >&2
    exit 1
  fi
}

write_check_script "$check_body"

# load URL TOKEN: prints "requests/s p50 p99 answers timeouts" (every answer is a 403 deny).
load() {
  local rps p50 p99 total timeouts
  export MESHGUARD_TOKEN="$2"
  read -r rps p50 p99 total _ timeouts < <(wrk_load "$1")
  echo "$rps $p50 $p99 $total $timeouts"
}

# Alert counters of a gateway: "sent failed dropped".
alert_counts() {
  curl -fsS "$1/metrics" | python3 -c '
import re, sys
text = sys.stdin.read()
def total(name):
    return sum(int(float(v)) for v in re.findall(rf"^meshguard_{name}\{{[^}}]*\}} (\S+)$", text, re.M))
print(total("alerts_sent_total"), total("alerts_failed_total"), total("alerts_dropped_total"))'
}

start_gateway off
off_url="$gateway" off_token="$MESHGUARD_TOKEN"
start_gateway hanging "http://127.0.0.1:$hang_port/hook"
hang_url="$gateway" hang_token="$MESHGUARD_TOKEN"
start_gateway answering "http://127.0.0.1:$ok_port/hook"
ok_url="$gateway" ok_token="$MESHGUARD_TOKEN"

: >"$work/rounds"
for round in $(seq 1 "$rounds"); do
  echo "round $round of $rounds" >&2
  echo "off $(load "$off_url/proxy/governance/check" "$off_token")" >>"$work/rounds"
  echo "hanging $(load "$hang_url/proxy/governance/check" "$hang_token")" >>"$work/rounds"
  echo "answering $(load "$ok_url/proxy/governance/check" "$ok_token")" >>"$work/rounds"
done
read -r h_sent h_failed h_dropped < <(alert_counts "$hang_url")
read -r a_sent a_failed a_dropped < <(alert_counts "$ok_url")

python3 - "$duration" "$connections" "$rounds" "$work/rounds" \
  "$h_sent" "$h_failed" "$h_dropped" "$a_sent" "$a_failed" "$a_dropped" <<'PY'
import statistics, sys
duration, connections, rounds, path = sys.argv[1:5]
counts = {"hanging": sys.argv[5:8], "answering": sys.argv[8:11]}
runs = {}
for line in open(path):
    name, rps, p50, p99, total, timeouts = line.split()
    runs.setdefault(name, []).append((float(rps), float(p50), float(p99), int(timeouts)))
def med(name, i):
    return statistics.median(r[i] for r in runs[name])
def span(name, i, fmt):
    values = [r[i] for r in runs[name]]
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"
print(f"wrk -t2 -c{connections} -d{duration}s per round, {rounds} interleaved rounds, every check "
      "denied (one alert each), loopback; median (range)\n")
print("| alerts | checks/s | p50 | p99 | wrk timeouts | alerts sent / failed / dropped |")
print("|---|---:|---:|---:|---:|---|")
labels = {"off": "off", "hanging": "webhook that never answers", "answering": "webhook answering 200"}
for name in ("off", "hanging", "answering"):
    sent = " / ".join(f"{int(c):,}" for c in counts[name]) if name in counts else "—"
    print(f"| {labels[name]} | {med(name, 0):,.0f} ({span(name, 0, '{:,.0f}')}) "
          f"| {med(name, 1):.2f} ms | {med(name, 2):.2f} ms ({span(name, 2, '{:.1f}')}) "
          f"| {sum(r[3] for r in runs[name])} | {sent} |")
print(f"\np99 with a hanging receiver ÷ p99 without alerts (medians): {med('hanging', 2) / med('off', 2):.2f}")
print(f"p99 with an answering receiver ÷ p99 without alerts (medians): {med('answering', 2) / med('off', 2):.2f}")
print(f"throughput with a hanging receiver ÷ without alerts (medians): {med('hanging', 0) / med('off', 0):.3f}")
PY
