#!/usr/bin/env bash
# Install the TimescaleDB extension (Apache-licensed part) into the machine's running
# PostgreSQL cluster, preload it and restart the cluster.
#
# Idempotent: when the extension is installed and preloaded it only checks and exits.
#
# Where it comes from, in order of preference:
#   1. `postgresql-$V-timescaledb` from the machine's apt sources, if they offer it for the
#      running major version $V;
#   2. otherwise Debian 13's `timescaledb` source package, built against
#      `postgresql-server-dev-$V`. The deb-src entry is made from the Debian mirror address
#      already in the machine's apt sources, so no package host is written in this repo.
#
# Works on Debian 12 (PostgreSQL 15 native) and Debian 13 (where PostgreSQL 15 may still come
# from Debian 12's packages and Debian 13 only packages the extension for PostgreSQL 17).
# Must run as root.
set -euo pipefail

log() { printf 'install-timescaledb: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and restarts PostgreSQL)"
command -v pg_lsclusters >/dev/null || die "pg_lsclusters not found: install postgresql-common and a PostgreSQL server first"

# The running cluster decides the major version and where its configuration lives.
read -r PG_VERSION PG_CLUSTER PG_PORT _ < <(pg_lsclusters -h | sort -k1,1nr | head -n 1)
[ -n "${PG_VERSION:-}" ] || die "no PostgreSQL cluster found (pg_lsclusters printed nothing)"
SHAREDIR="/usr/share/postgresql/$PG_VERSION"
CONTROL="$SHAREDIR/extension/timescaledb.control"
SUITE_SRC=trixie   # Debian 13: its timescaledb source builds against PostgreSQL 15 and newer

start_cluster() {
  if ! pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
    log "starting PostgreSQL $PG_VERSION/$PG_CLUSTER"
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" start
  fi
}

psql_super() { su postgres -c "psql -X -q -p $PG_PORT -tA -v ON_ERROR_STOP=1 $(printf '%q ' "$@")"; }

preloaded() { psql_super -c "SHOW shared_preload_libraries" | grep -qw timescaledb; }

mirror_uri() {
  # First Debian archive URI in the machine's sources (deb822 or one-line), excluding the
  # security archive, which does not carry the source package.
  local uri
  uri=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{for (i=2;i<=NF;i++) print $i}';
           grep -hsE '^\s*deb(-src)?\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
             | sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } \
         | grep -v -- '-security' | grep -E '/debian/?$' | head -n 1)
  [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list*; add one, then rerun"
  printf '%s\n' "${uri%/}"
}

apt_updated=0
apt_update() { [ "$apt_updated" = 1 ] || { apt-get update -qq; apt_updated=1; }; }

install_from_package() {
  apt_update
  local pkg="postgresql-$PG_VERSION-timescaledb" candidate
  candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
    log "installing $pkg $candidate from the apt sources"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    return 0
  fi
  return 1
}

build_from_source() {
  local mirror srcfile
  mirror=$(mirror_uri)
  srcfile=/etc/apt/sources.list.d/meterwatch-timescaledb-src.sources
  if [ ! -f "$srcfile" ]; then
    log "adding a deb-src entry for Debian 13 ($SUITE_SRC) from the machine's mirror"
    cat >"$srcfile" <<SRC
# Added by meterwatch scripts/install-timescaledb.sh: Debian 13's timescaledb source package.
Types: deb-src
URIs: $mirror
Suites: $SUITE_SRC
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_updated=0
  fi
  apt_update
  log "installing build dependencies (postgresql-server-dev-$PG_VERSION, cmake, ...)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "postgresql-server-dev-$PG_VERSION" cmake make gcc dpkg-dev libssl-dev libkrb5-dev >/dev/null
  BUILD_DIR=$(mktemp -d /tmp/timescaledb-build.XXXXXX)
  trap 'rm -rf "$BUILD_DIR"' EXIT
  local work=$BUILD_DIR
  log "fetching the timescaledb source package from $SUITE_SRC"
  (cd "$work" && apt-get source -qq -t "$SUITE_SRC" timescaledb >/dev/null 2>&1 \
     || apt-get source -qq "timescaledb/$SUITE_SRC" >/dev/null)
  local dir
  dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' | head -n 1)
  [ -n "$dir" ] || die "apt-get source timescaledb produced no source tree in $work"
  log "building $(basename "$dir") against PostgreSQL $PG_VERSION (about 90 s)"
  (cd "$dir" \
    && ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
         -DWARNINGS_AS_ERRORS=OFF -DGENERATE_DOWNGRADE_SCRIPT=OFF -DSEND_TELEMETRY_DEFAULT=OFF \
         -DPG_CONFIG="/usr/lib/postgresql/$PG_VERSION/bin/pg_config" >/dev/null \
    && make -C build -j"$(nproc)" install >/dev/null)
}

preload_and_restart() {
  start_cluster
  if preloaded; then return 0; fi
  local current new
  current=$(psql_super -c "SHOW shared_preload_libraries")
  new=$(printf '%s' "${current:+$current,}timescaledb" | sed 's/ //g')
  log "setting shared_preload_libraries = '$new' and restarting PostgreSQL $PG_VERSION/$PG_CLUSTER"
  psql_super -c "ALTER SYSTEM SET shared_preload_libraries = '$new'"
  pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" restart
}

start_cluster
if [ -f "$CONTROL" ]; then
  log "extension files present for PostgreSQL $PG_VERSION"
else
  install_from_package || build_from_source
  [ -f "$CONTROL" ] || die "timescaledb.control not in $SHAREDIR/extension after install"
fi
preload_and_restart
preloaded || die "timescaledb is not in shared_preload_libraries after restart"
log "ready: $(psql_super -c "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'" | sed 's/^/timescaledb /')"
