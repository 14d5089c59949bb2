#!/usr/bin/env bash
# pg.sh — start and stop private PostgreSQL 15 instances for tests, the
# local run and the benchmarks.
#
# Every instance lives in its own directory, listens on 127.0.0.1 on a
# free port chosen at init time (so two runs or a leftover never
# collide), runs as a non-root user (PostgreSQL refuses root: when we are
# root, the Debian `postgres` user), and is stopped by the PID in its
# postmaster.pid, never by name. DIR/env holds the connection settings:
#   PGHOST PGPORT PGUSER DSN
#
# Usage:
#   pg.sh init DIR                 initdb (data checksums) + config, not started
#   pg.sh standby DIR PRIMARY_DIR [NAME]
#                                  pg_basebackup of a running primary, streaming,
#                                  application_name NAME (default: basename DIR)
#   pg.sh start DIR                start and wait until it accepts connections
#   pg.sh stop DIR                 fast shutdown by PID (idempotent)
#   pg.sh kill DIR                 SIGKILL the postmaster by PID (fault injection)
#   pg.sh createdb DIR NAME        create a database
#   pg.sh psql DIR [args...]       psql as the superuser
#   pg.sh dsn DIR [DBNAME]         print the libpq connection string
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$PGBIN/initdb" ] || { echo "pg.sh: PostgreSQL 15 not found in $PGBIN; run scripts/install-deps.sh" >&2; exit 1; }

die() { echo "pg.sh: $*" >&2; exit 1; }

# Run a command as the database's OS user.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Ports below Linux's ephemeral range (32768-60999): a port in that range
# can be taken at any moment by an outgoing connection's local end.
free_port() {
  local p i
  for i in $(seq 1 100); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12700 ))
    if ! ss -ltnH "sport = :$p" 2>/dev/null | grep -q .; then
      echo "$p"; return 0
    fi
  done
  die "no free TCP port found in 20000-32699 after 100 tries"
}

# Create DIR for the server's user. As root, when that user cannot reach
# DIR's parent (a checkout under /root, say), the instance lives under
# /var/tmp and DIR is a symlink to it; every command resolves DIR with
# realpath, so the server only ever sees the reachable path.
prepare_dir() {
  local dir=$1
  if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$(dirname "$dir")"
    if ! runuser -u postgres -- test -x "$(dirname "$dir")" 2>/dev/null; then
      local real
      real="/var/tmp/meridian-pg-$(printf '%s' "$dir" | md5sum | cut -c1-16)"
      rm -rf "$real"
      mkdir -p "$real"
      rm -rf "$dir"
      ln -s "$real" "$dir"
      dir=$real
    fi
    mkdir -p "$dir"
    chown postgres: "$dir"
  else
    mkdir -p "$dir"
  fi
  chmod 700 "$dir"
}

write_env() {
  local dir=$1 port=$2
  cat > "$dir/env" <<EOF
PGHOST=127.0.0.1
PGPORT=$port
PGUSER=postgres
DSN="host=127.0.0.1 port=$port user=postgres dbname=postgres"
EOF
}

port_of() { sed -n 's/^PGPORT=//p' "$1/env"; }

base_conf() {
  local dir=$1 port=$2
  cat >> "$dir/data/postgresql.conf" <<EOF
# --- Meridian (scripts/pg.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 256MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
wal_log_hints = on
synchronous_commit = on
fsync = on
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %a '
EOF
}

cmd=${1:-}; shift || true
case "$cmd" in
init)
  dir=$(realpath -m "${1:?usage: pg.sh init DIR}")
  [ -e "$dir/data/PG_VERSION" ] && die "$dir already holds a cluster; stop and remove it first"
  prepare_dir "$dir"
  dir=$(realpath "$dir")
  port=$(free_port)
  as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed in $dir"; }
  base_conf "$dir" "$port"
  echo "host replication all 127.0.0.1/32 trust" >> "$dir/data/pg_hba.conf"
  write_env "$dir" "$port"
  ;;
standby)
  dir=$(realpath -m "${1:?usage: pg.sh standby DIR PRIMARY_DIR [NAME]}")
  pdir=$(realpath "${2:?usage: pg.sh standby DIR PRIMARY_DIR [NAME]}")
  name=${3:-$(basename "$dir")}
  pport=$(port_of "$pdir")
  prepare_dir "$dir"
  dir=$(realpath "$dir")
  port=$(free_port)
  as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$dir/data" -X stream -R -c fast \
    -d "application_name=$name" >"$dir/basebackup.log" 2>&1 \
    || { cat "$dir/basebackup.log" >&2; die "pg_basebackup from $pdir failed"; }
  # The copied config names the primary's port and socket directory: override.
  cat >> "$dir/data/postgresql.conf" <<EOF
# --- standby of $pdir
port = $port
unix_socket_directories = '$dir'
primary_conninfo = 'host=127.0.0.1 port=$pport user=postgres application_name=$name'
EOF
  write_env "$dir" "$port"
  ;;
start)
  dir=$(realpath "${1:?usage: pg.sh start DIR}")
  [ -f "$dir/env" ] || die "$dir is not initialised (no env file); run pg.sh init first"
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
    || { tail -20 "$dir/postgres.log" >&2; die "PostgreSQL in $dir did not start (log above)"; }
  ;;
stop)
  dir=$(realpath -m "${1:?usage: pg.sh stop DIR}")
  pidfile="$dir/data/postmaster.pid"
  [ -f "$pidfile" ] || exit 0
  pid=$(head -1 "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true           # fast shutdown
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -QUIT "$pid" 2>/dev/null || true          # immediate shutdown
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  ;;
kill)
  dir=$(realpath "${1:?usage: pg.sh kill DIR}")
  pid=$(head -1 "$dir/data/postmaster.pid")
  kill -KILL "$pid"
  ;;
createdb)
  dir=$(realpath "${1:?usage: pg.sh createdb DIR NAME}")
  name=${2:?usage: pg.sh createdb DIR NAME}
  "$PGBIN/createdb" -h 127.0.0.1 -p "$(port_of "$dir")" -U postgres "$name"
  ;;
psql)
  dir=$(realpath "${1:?usage: pg.sh psql DIR [args]}"); shift
  "$PGBIN/psql" -h 127.0.0.1 -p "$(port_of "$dir")" -U postgres -X -v ON_ERROR_STOP=1 "$@"
  ;;
dsn)
  dir=$(realpath "${1:?usage: pg.sh dsn DIR [DBNAME]}")
  echo "host=127.0.0.1 port=$(port_of "$dir") user=postgres dbname=${2:-postgres}"
  ;;
*)
  sed -n '2,25p' "$0" >&2
  exit 2
  ;;
esac
