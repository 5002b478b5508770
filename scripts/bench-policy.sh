#!/usr/bin/env bash
# Policy decision benchmark: MeshGuard vs Cedar vs Rego (regorus) on equivalent policies, in one
# run, then the table of docs/benchmarks.md ("Policy decisions") built from criterion's medians.
# Extra arguments go to criterion (e.g. a filter: scripts/bench-policy.sh rules_).
set -euo pipefail
cd "$(dirname "$0")/.."
# The comparison is its own cargo project (crates/policy/compare) so that the test build never
# compiles Cedar and regorus; it shares the workspace's target dir.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
target_dir="$CARGO_TARGET_DIR"

cargo bench --locked --manifest-path crates/policy/compare/Cargo.toml --bench policy_decide -- "$@"

python3 - "$target_dir/criterion/policy_decide" <<'PY'
import json, pathlib, sys

root = pathlib.Path(sys.argv[1])
cases = ["allowed", "denied", "default_deny", "conditions_allowed", "conditions_denied", "schedule_allowed", "schedule_closed", "rules_10", "rules_10000"]
engines = ["meshguard", "cedar", "rego"]

def median_ns(engine, case):
    path = root / engine / case / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"]

def show(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"

def ratio(other, ours):
    return "–" if other is None or ours is None else f"{other / ours:.1f}×"

print("| case | MeshGuard | Cedar | Rego (regorus) | Cedar ÷ MeshGuard | Rego ÷ MeshGuard |")
print("|---|---:|---:|---:|---:|---:|")
for case in cases:
    ours, cedar, rego = (median_ns(e, case) for e in engines)
    print(f"| {case} | {show(ours)} | {show(cedar)} | {show(rego)} | {ratio(cedar, ours)} | {ratio(rego, ours)} |")
small, large = median_ns("meshguard", "rules_10"), median_ns("meshguard", "rules_10000")
if small and large:
    print(f"\nMeshGuard, 10,000 rules ÷ 10 rules: {large / small:.2f}× ({show(large)} vs {show(small)})")
PY
