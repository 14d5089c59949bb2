#!/usr/bin/env bash
# run-local.sh BUILD_DIR — `make run`: a whole Meridian cell on 127.0.0.1
# until Ctrl-C.
#
# Brings up, with scripts/cell.sh: a 3-member etcd cluster, three
# PostgreSQL 15 nodes each run by a meridian-keeper (one primary, two
# quorum-synchronous standbys, automatic failover), the ledger schema,
# and a meridiand that follows the cell's leader. Then issues an API key
# for customer `demo` and prints the endpoints and ready-to-paste
# examples, including how to kill the primary and watch the failover.
#
# The cell lives in .run/cell (or under /var/tmp when the `postgres`
# user cannot reach the checkout) and is made fresh on every run; Ctrl-C
# (or SIGTERM) stops every process by PID (`cell.sh down`).
set -euo pipefail

build=$(realpath "${1:?usage: run-local.sh BUILD_DIR}")
root=$(cd "$(dirname "$0")/.." && pwd)
cellsh="$root/scripts/cell.sh"
ctl="$build/meridianctl"

say() { printf '%-12s %s\n' "$1" "$2"; }
die() { echo "run-local: $*" >&2; exit 1; }

for b in meridianctl meridiand meridian-keeper; do
  [ -x "$build/$b" ] || die "no $b in $build: build first (make build)"
done

run="$root/.run"
mkdir -p "$run"
chmod 755 "$run" # the postgres user must traverse it
cell="$run/cell"
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$run" 2>/dev/null; then
  cell="/var/tmp/meridian-run-$(printf %s "$root" | sha256sum | cut -c1-12)/cell"
  mkdir -p "$(dirname "$cell")"
  chmod 755 "$(dirname "$cell")"
fi

# A cell left by a run that was killed hard: stop it by its PIDs.
if [ -f "$cell/env" ]; then
  say cell "stopping the one left by a previous run"
  bash "$cellsh" down "$cell" >/dev/null 2>&1 || true
fi
rm -rf "$cell"

up=0
cleanup() {
  trap - INT TERM EXIT
  if [ "$up" = 1 ]; then
    echo
    say cell "stopping meridiand, keepers, PostgreSQL and etcd (by PID)"
    bash "$cellsh" down "$cell" >/dev/null 2>&1 || true
  fi
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

say cell "starting etcd x3, 3 PostgreSQL nodes with keepers, meridiand (about 20 s)"
up=1
if ! bash "$cellsh" up "$cell" --name demo --meridiand 1 --build "$build" 2>"$run/cell-up.log"; then
  cat "$run/cell-up.log" >&2
  die "the cell did not come up (logs in $cell)"
fi
# shellcheck disable=SC1090
. "$cell/env"
leader=$(bash "$cellsh" leader "$cell")
url=${MERIDIAND_URLS%%,*}
key=$("$ctl" --config "$CONFIG" --json apikey create --customer demo --label "make run" | jq -r '.key')

echo
printf 'Meridian cell "demo" is running.\n\n'
printf '  %-22s %s\n' "meridiand (API)" "$url"
printf '  %-22s %s\n' "etcd" "$ETCD_ENDPOINTS"
for n in $NODES; do
  pv="N${n#n}_PG_PORT"; mv="N${n#n}_METRICS_PORT"
  role=standby; [ "$n" = "$leader" ] && role=primary
  printf '  %-22s %s\n' "node $n ($role)" "postgres 127.0.0.1:${!pv}, keeper metrics http://127.0.0.1:${!mv}/metrics"
done
a=$(cat /proc/sys/kernel/random/uuid)
b=$(cat /proc/sys/kernel/random/uuid)
t=$(cat /proc/sys/kernel/random/uuid)
cat <<EOF

Demo API key (customer demo, shown once): $key

Try it (two USD accounts, a 12.50 transfer, the credited balance):
  export KEY=$key
  curl -sS -w '\\n' $url/v1/accounts -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
    -d '{"accounts":[{"id":"$a","ledger":840,"code":1},{"id":"$b","ledger":840,"code":1}]}'
  curl -sS -w '\\n' $url/v1/transfers -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
    -d '{"transfers":[{"id":"$t","debit_account_id":"$a","credit_account_id":"$b","amount":1250,"ledger":840,"code":1}]}'
  curl -sS -w '\\n' $url/v1/accounts/$b -H "Authorization: Bearer \$KEY"

Operate it:
  ${ctl#"$root"/} --config $CONFIG status          # nodes, roles, lag, epoch, lease
  ${ctl#"$root"/} --config $CONFIG history         # failovers and switchovers
  bash scripts/cell.sh kill-node $cell $leader     # kill the primary: a standby takes over in ~5 s

More: docs/API.md, docs/FAILOVER.md, docs/OPERATIONS.md.
Stop with Ctrl-C (stops everything by PID).
EOF

# Wait until Ctrl-C; notice if meridiand died on its own.
mpid=$(cat "$cell/meridiand1.pid.launch")
while kill -0 "$mpid" 2>/dev/null; do sleep 1; done
echo "run-local: meridiand exited; last lines of $cell/meridiand1.log:" >&2
tail -15 "$cell/meridiand1.log" >&2
exit 1
