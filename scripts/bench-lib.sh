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
