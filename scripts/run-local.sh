#!/usr/bin/env bash
# run-local.sh BUILD_DIR — `make run`: PostgreSQL + meridiand on
# 127.0.0.1 with a demo customer and key, until Ctrl-C.
#
# State lives in .run/ at the repository root (gitignored) and survives
# between runs: the PostgreSQL instance (.run/pg, made with scripts/pg.sh,
# running as the `postgres` user when we are root), the configuration
# (.run/meridiand.conf: written once by `meridianctl config init`, with a
# free port chosen then and kept) and meridiand's log. Every run migrates
# the schema, issues a fresh API key for customer `demo`, starts
# meridiand in the background, waits for /readyz and prints how to use
# it. Ctrl-C (or SIGTERM) stops meridiand, then PostgreSQL, each by PID.
set -euo pipefail

build=$(realpath "${1:?usage: run-local.sh BUILD_DIR}")
root=$(cd "$(dirname "$0")/.." && pwd)
pg="$root/scripts/pg.sh"
run="$root/.run"
conf="$run/meridiand.conf"
log="$run/meridiand.log"
ctl="$build/meridianctl"
daemon="$build/meridiand"
db=meridian

say() { printf '%-12s %s\n' "$1" "$2"; }
die() { echo "run-local: $*" >&2; exit 1; }

{ [ -x "$ctl" ] && [ -x "$daemon" ]; } || die "no meridianctl/meridiand in $build: build first (make build)"

mkdir -p "$run"
chmod 755 "$run" # the postgres user must traverse it to reach .run/pg

# PostgreSQL runs as `postgres` when we are root; if it cannot reach the
# tree (a checkout under /root, say), its instance lives under /var/tmp.
pgdir="$run/pg"
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$run" 2>/dev/null; then
  pgdir="/var/tmp/meridian-run-$(printf %s "$root" | sha256sum | cut -c1-12)/pg"
  mkdir -p "$(dirname "$pgdir")"
  chmod 755 "$(dirname "$pgdir")"
fi

daemon_pid=
pg_started=0
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    say meridiand "stopping (pid $daemon_pid)"
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -f "$run/meridiand.pid"
  if [ "$pg_started" = 1 ]; then
    say PostgreSQL "stopping"
    bash "$pg" stop "$pgdir" || true
  fi
}
trap 'echo; cleanup; exit 0' INT TERM
trap cleanup EXIT

# A meridiand left behind by a run that was killed hard: stop it by PID.
if [ -f "$run/meridiand.pid" ]; then
  old=$(cat "$run/meridiand.pid")
  if [ -n "$old" ] && [ "$(readlink "/proc/$old/exe" 2>/dev/null)" = "$(realpath "$daemon")" ]; then
    say meridiand "stopping the one left by a previous run (pid $old)"
    kill -TERM "$old" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$run/meridiand.pid"
fi

# --- PostgreSQL
if [ ! -f "$pgdir/env" ]; then
  say PostgreSQL "creating an instance in ${pgdir#"$root"/}"
  bash "$pg" init "$pgdir"
fi
pg_pid=$(head -1 "$pgdir/data/postmaster.pid" 2>/dev/null || true)
if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
  say PostgreSQL "already running (pid $pg_pid)"
else
  bash "$pg" start "$pgdir"
  say PostgreSQL "started (port $(sed -n 's/^PGPORT=//p' "$pgdir/env"))"
fi
pg_started=1
if [ -z "$(bash "$pg" psql "$pgdir" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
  bash "$pg" createdb "$pgdir" "$db"
fi
dsn=$(bash "$pg" dsn "$pgdir" "$db")

# --- configuration (once), its port kept across runs
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
    ss -ltnH "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
  done
  die "no free TCP port found in 20000-49999"
}
if [ ! -f "$conf" ]; then
  "$ctl" config init --out "$conf" --dsn "$dsn" --listen "127.0.0.1:$(free_port)" >/dev/null
  say config "wrote ${conf#"$root"/}"
elif [ "$(sed -n 's/^dsn = //p' "$conf")" != "$dsn" ]; then
  # The instance was re-created on another port: follow it.
  sed -i "s|^dsn = .*|dsn = $dsn|" "$conf"
fi
listen=$(sed -n 's/^listen = //p' "$conf")
port=${listen##*:}
if ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
  die "port $port (listen in ${conf#"$root"/}) is in use; stop what uses it, or delete ${conf#"$root"/} to pick a new port"
fi

# --- schema, demo customer and key
say schema "$("$ctl" --config "$conf" db migrate | tail -1)"
key_json=$("$ctl" --config "$conf" --json apikey create --customer demo --label "make run")
key=$(jq -r '.key' <<<"$key_json")

# --- meridiand (SIGINT is ignored by background jobs of a script: it
# stops when cleanup sends SIGTERM, after this script saw the Ctrl-C)
"$daemon" --config "$conf" >>"$log" 2>&1 &
daemon_pid=$!
echo "$daemon_pid" >"$run/meridiand.pid"
url="http://$listen"
for i in $(seq 1 300); do
  if ! kill -0 "$daemon_pid" 2>/dev/null; then
    echo "run-local: meridiand exited during start-up; last lines of ${log#"$root"/}:" >&2
    tail -15 "$log" >&2
    exit 1
  fi
  curl -fsS -o /dev/null --max-time 2 "$url/readyz" 2>/dev/null && break
  [ "$i" -eq 300 ] && die "meridiand is not ready after 30 s (see ${log#"$root"/})"
  sleep 0.1
done
say meridiand "ready (pid $daemon_pid, log ${log#"$root"/})"

a=$(cat /proc/sys/kernel/random/uuid)
b=$(cat /proc/sys/kernel/random/uuid)
t=$(cat /proc/sys/kernel/random/uuid)
cat <<EOF

Meridian is running at $url
Demo API key (customer demo, shown once): $key

Try it (two USD accounts, a 12.50 transfer, the credited balance):
  export KEY=$key
  curl -sS -w '\\n' $url/v1/accounts -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
    -d '{"accounts":[{"id":"$a","ledger":840,"code":1},{"id":"$b","ledger":840,"code":1}]}'
  curl -sS -w '\\n' $url/v1/transfers -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
    -d '{"transfers":[{"id":"$t","debit_account_id":"$a","credit_account_id":"$b","amount":1250,"ledger":840,"code":1}]}'
  curl -sS -w '\\n' $url/v1/accounts/$b -H "Authorization: Bearer \$KEY"

More: docs/API.md. Operator CLI: ${ctl#"$root"/} --config ${conf#"$root"/} help
Stop with Ctrl-C (stops meridiand, then PostgreSQL).
EOF

status=0
wait "$daemon_pid" || status=$?
# Only reached when meridiand stopped by itself (Ctrl-C runs the trap).
daemon_pid=
echo "run-local: meridiand exited (status $status); last lines of ${log#"$root"/}:" >&2
tail -15 "$log" >&2
exit 1
