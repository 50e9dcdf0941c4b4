#!/usr/bin/env bash
# Start the machine's PostgreSQL cluster and Redis if they are down (what the tests need).
# Idempotent; run as root.
set -euo pipefail
log() { printf 'start-services: %s\n' "$*" >&2; }

if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters -h | while read -r version cluster _port status _rest; do
    if [ "$status" != online ]; then
      log "starting PostgreSQL $version/$cluster"
      pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
    fi
  done
else
  log "no PostgreSQL cluster tools found (pg_lsclusters); install postgresql"
  exit 1
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || { log "redis-server not installed"; exit 1; }
  log "starting Redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli ping >/dev/null
log "PostgreSQL and Redis are up"
