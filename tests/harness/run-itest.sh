#!/usr/bin/env bash
# run-itest.sh PGDIR NAME CMD... — run one integration test against its
# own fresh database (named after the test) in the fixture's instance.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pg="$here/../../scripts/pg.sh"
pgdir=${1:?}; name=${2:?}; shift 2
db="t_${name//[^a-zA-Z0-9_]/_}"
bash "$pg" psql "$pgdir" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
bash "$pg" createdb "$pgdir" "$db"
export MERIDIAN_TEST_PGDIR="$pgdir"
export MERIDIAN_TEST_DSN="$(bash "$pg" dsn "$pgdir" "$db")"
exec "$@"
