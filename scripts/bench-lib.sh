# Shared by the load benchmarks (sourced, not run): a scratch dir and the background processes
# removed on exit, a free loopback port, and a bounded wait for readiness.

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls (at most 10 s) until the command succeeds.
wait_until() {
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "not ready after 10 s: $*" >&2
  return 1
}

# Writes $work/check.lua, with which wrk POSTs the JSON body $1 to the URL it loads, with the
# agent token read from $MESHGUARD_TOKEN when wrk starts.
write_check_script() {
  cat > "$work/check.lua" <<LUA
wrk.method = "POST"
wrk.body = '$1'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("MESHGUARD_TOKEN")
LUA
}

# wrk_load URL: a 2 s warm-up, then $duration seconds of wrk with $connections connections and
# $work/check.lua. wrk's report goes to stderr; prints
# "requests/s p50_ms p99_ms requests non_2xx timeouts".
wrk_load() {
  local url="$1" out
  wrk -t2 -c"$connections" -d2s -s "$work/check.lua" "$url" >/dev/null
  out="$(wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/check.lua" "$url")"
  echo "$out" >&2
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def latency(p):
    m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = re.search(r"(\d+) requests in", out).group(1)
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
timeouts = re.search(r"timeout (\d+)", out)
print(rps, latency(50), latency(99), total, bad.group(1) if bad else 0,
      timeouts.group(1) if timeouts else 0)
PY
}
