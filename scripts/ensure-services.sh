#!/usr/bin/env bash
# What `make test` needs on this machine: PostgreSQL with TimescaleDB preloaded, Redis, and
# Chromium with ChromeDriver. As root it installs and starts whatever is missing (each script
# is idempotent and quick when there is nothing to do); as another user it says what to run.
set -euo pipefail
here=$(dirname "$0")
if [ "$(id -u)" = 0 ]; then
  bash "$here/install-timescaledb.sh"
  bash "$here/start-services.sh"
  bash "$here/install-browser.sh"
  exit 0
fi
missing=()
psql -X -q -tA -h 127.0.0.1 -U postgres -c "SHOW shared_preload_libraries" 2>/dev/null \
  | grep -qw timescaledb || missing+=("PostgreSQL with TimescaleDB")
redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || missing+=("Redis")
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || missing+=("Chromium")
if [ "${#missing[@]}" -gt 0 ]; then
  printf 'the tests need: %s; run `sudo make services` once, then `make test`\n' \
    "$(IFS=,; echo "${missing[*]}")" >&2
  exit 1
fi
