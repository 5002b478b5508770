#!/usr/bin/env bash
# Installs the Debian packages the test suites drive as they are (sourced by scripts/test.sh):
# nginx-light, whose auth_request module fronts the gateway in the forward-auth test. Only what is
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
