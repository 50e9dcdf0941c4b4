#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the dashboard's browser tests, if missing.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
printf 'install-browser: installing chromium and chromium-driver\n' >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver >/dev/null
