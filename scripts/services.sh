#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis servers the shared-store tests use are answering, starting
# them when they are installed but stopped. Prints the URLs to export; never fails the run: the
# suites that need a server skip with a message when it cannot be had.
set -u

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if command -v pg_isready >/dev/null 2>&1 && ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if command -v redis-server >/dev/null 2>&1 && ! redis_up; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi

if command -v pg_isready >/dev/null 2>&1 && pg_up; then
  echo "export MESHGUARD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
else
  echo "echo 'PostgreSQL is not answering: PostgreSQL suites will be skipped' >&2"
fi
if command -v redis-cli >/dev/null 2>&1 && redis_up; then
  echo "export MESHGUARD_TEST_REDIS_URL=redis://127.0.0.1:6379"
else
  echo "echo 'Redis is not answering: Redis suites will be skipped' >&2"
fi
