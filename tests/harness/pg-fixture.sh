#!/usr/bin/env bash
# pg-fixture.sh start|stop DIR — the PostgreSQL instance shared by the
# integration tests of one ctest run (CTest fixture "pg"). A leftover
# instance in DIR from an interrupted run is stopped (by its PID) and
# removed before a new one is made.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pg="$here/../../scripts/pg.sh"
dir=${2:?usage: pg-fixture.sh start|stop DIR}
case "$1" in
start)
  bash "$pg" stop "$dir" || true
  rm -rf "$dir"
  bash "$pg" init "$dir"
  bash "$pg" start "$dir"
  echo "pg-fixture: PostgreSQL up, $(bash "$pg" dsn "$dir")"
  ;;
stop)
  bash "$pg" stop "$dir"
  echo "pg-fixture: PostgreSQL in $dir stopped"
  ;;
*) echo "usage: pg-fixture.sh start|stop DIR" >&2; exit 2 ;;
esac
