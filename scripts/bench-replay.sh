#!/usr/bin/env bash
# Replay at the scale of a fleet: `meshguard policy replay` over an audit trail of COUNT checks
# (default 1,000,000), written straight into the gateway's SQLite store by
# crates/gateway/examples/fill_audit.rs. Measures the replay's time and the gateway's peak memory
# (VmHWM) after a replay of a tenth of the trail and after the whole trail, and checks the report
# against what the generator wrote (one check in ten is `read:secrets`, which the candidate denies).
# Usage: [SKIP_BUILD=1] scripts/bench-replay.sh [COUNT=1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-1000000}"
target_dir="${CARGO_TARGET_DIR:-target}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p meshguard --bin meshguard
  cargo build --release -p meshguard-gateway --example fill_audit
fi
bin="$target_dir/release/meshguard"
fill="$target_dir/release/examples/fill_audit"

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh

admin_token="replay-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
port="$(free_port)"
data="$work/data"
export MESHGUARD_URL="http://127.0.0.1:$port" MESHGUARD_ADMIN_TOKEN="$admin_token" MESHGUARD_HOME="$data"
RUST_LOG=warn "$bin" --data-dir "$data" serve --addr "127.0.0.1:$port" >"$work/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
wait_until curl -fsS "$MESHGUARD_URL/health"

cat > "$work/live.yaml" <<'YAML'
name: reads
version: "1"
appliesTo: {tags: [replay]}
rules:
  - name: all-reads
    effect: allow
    actions: ["read:*"]
YAML
cat > "$work/candidate.yaml" <<'YAML'
name: reads
version: "2"
appliesTo: {tags: [replay]}
rules:
  - name: no-secrets
    effect: deny
    actions: ["read:secrets"]
  - name: all-reads
    effect: allow
    actions: ["read:*"]
YAML
"$bin" policy apply "$work/live.yaml" >/dev/null
"$bin" agent create replay-bot --trust verified --tags replay >/dev/null 2>&1

peak_kb() { awk '/VmHWM/ {print $2}' "/proc/$gateway_pid/status"; }

# replay N_EXPECTED_CHECKED N_EXPECTED_CHANGED: runs the replay, checks its counts, prints
# "seconds peak_kb".
replay() {
  local started ended report
  started=$(date +%s.%N)
  report="$("$bin" --json policy replay "$work/candidate.yaml" --since 7d)"
  ended=$(date +%s.%N)
  python3 - "$1" "$2" "$report" <<'PY'
import json, sys
checked, changed, report = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
assert report["checked"] == checked, (report["checked"], checked)
assert report["changed"] == changed, (report["changed"], changed)
assert report["transitions"] == [{"from": "allow", "to": "deny", "count": changed}], report["transitions"]
PY
  echo "$(python3 -c "print(f'{$ended - $started:.3f}')") $(peak_kb)"
}

tenth=$((count / 10))
secrets_a="$("$fill" "$data" replay-bot "$tenth")"
read -r t_a m_a < <(replay "$tenth" "$secrets_a")
secrets_b="$("$fill" "$data" replay-bot "$((count - tenth))")"
read -r t_b m_b < <(replay "$count" "$((secrets_a + secrets_b))")

echo "replay of a generated trail (SQLite, release build, one run)"
echo
echo "| audited checks | changed | replay time | checks/s | gateway peak RSS |"
echo "|---:|---:|---:|---:|---:|"
python3 - "$tenth" "$secrets_a" "$t_a" "$m_a" "$count" "$((secrets_a + secrets_b))" "$t_b" "$m_b" <<'PY'
import sys
a = sys.argv[1:]
for n, changed, t, kb in (a[0:4], a[4:8]):
    n, changed, t, kb = int(n), int(changed), float(t), int(kb)
    print(f"| {n:,} | {changed:,} | {t:.2f} s | {n / max(t, 0.001):,.0f} | {kb / 1024:.0f} MiB |")
PY
