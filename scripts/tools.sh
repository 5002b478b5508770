#!/usr/bin/env bash
# Installs the Debian packages the test suites drive as they are (sourced by scripts/test.sh):
# nginx-light, whose auth_request module fronts the gateway in the forward-auth test, and
# chromium, the browser of the console tests (Playwright cannot download its own here). Only what is
# missing is installed; the package's own system nginx is stopped, since the test runs its own.
set -euo pipefail

if ! command -v nginx >/dev/null 2>&1 && ! [ -x /usr/sbin/nginx ]; then
  echo "installing nginx-light (forward-auth test)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq nginx-light >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq nginx-light >/dev/null
  fi
  (service nginx stop || /usr/sbin/nginx -s stop) >/dev/null 2>&1 || true
fi

if ! [ -x /usr/bin/chromium ]; then
  echo "installing chromium (console browser tests)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq chromium >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium >/dev/null
  fi
fi
