#!/usr/bin/env bash
# itest_lab.sh — the multi-region lab end to end (`meridianctl lab`,
# scripts/lab.sh, docs/LAB.md): bring up the default topology, check both
# cells lead, move money through the global entry for each cell, measure
# that a cross-region link really adds the WAN delay, kill cell eu's
# primary and see the cell and the global entry recover, then `lab down`
# and check that no process and no port of the lab is left.
#
# Env: MERIDIAN_BIN_DIR (build directory), MERIDIAN_SOURCE_DIR (source
# tree). Prints "ok"/"not ok" lines and "N passed, M failed"; exits 1 on
# any failure (the lab's logs are kept then).
set -u
here=$(cd "$(dirname "$0")" && pwd)
export MERIDIAN_SOURCE_DIR=${MERIDIAN_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${MERIDIAN_BIN_DIR:?MERIDIAN_BIN_DIR must name the build directory}
src=$MERIDIAN_SOURCE_DIR
ctl="$bin/meridianctl"
FAILOVER_MAX_S=${FAILOVER_MAX_S:-30}

# shellcheck disable=SC1091
. "$here/tap.sh"

work=$(mktemp -d /tmp/meridian-itest-lab-XXXXXX)
chmod 755 "$work"
lab="$work/lab"
down_done=0
cleanup() {
  [ "$down_done" = 1 ] || "$ctl" lab down --dir "$lab" >/dev/null 2>&1
  if [ "$failed" -eq 0 ]; then rm -rf "$work"; else echo "# lab logs kept in $lab/logs"; fi
}
trap cleanup EXIT

uuid() { cat /proc/sys/kernel/random/uuid; }
status_json() { "$ctl" --json lab status --dir "$lab" 2>/dev/null; }
leader() { status_json | jq -r --arg c "$1" '.cells[$c].leader // empty' 2>/dev/null; }

# ---- up
t_up=$(date +%s)
if ! "$ctl" lab up --dir "$lab" >"$work/up.out" 2>"$work/up.err"; then
  tail -30 "$work/up.err"
  not_ok "lab up with topologies/lab.json"
  finish
fi
ok "lab up with topologies/lab.json in $(( $(date +%s) - t_up )) s"
grep -q 'Demo API keys' "$work/up.out" && grep -q 'Global entry' "$work/up.out"
check "lab up prints the endpoints and demo keys" test $? -eq 0
# shellcheck disable=SC1091
. "$lab/env"

# ---- leaders
st=$(status_json)
check "lab status --json parses and lists every process alive" \
  test "$(jq -r '.alive == .processes_total and .processes_total > 20' <<<"$st" 2>/dev/null)" = true
for c in us eu; do
  check "cell $c has a leader (epoch $(jq -r --arg c "$c" '.cells[$c].epoch' <<<"$st"))" \
    test -n "$(jq -r --arg c "$c" '.cells[$c].leader // empty' <<<"$st" 2>/dev/null)"
done
check "cell us leads in its home region us-east" test "$(jq -r '.cells.us.leader_region' <<<"$st")" = us-east
check "cell eu leads in eu-west" test "$(jq -r '.cells.eu.leader_region' <<<"$st")" = eu-west
check "the DR standby us-dr1 runs in eu-west" \
  test "$(jq -r '[.processes[] | select(.name == "postgres-us-dr1" and .region == "eu-west" and .alive)] | length' <<<"$st")" = 1

# ---- money through the global entry, per cell
declare -A KEY ACCT_A ACCT_B
post() { # URL BODY [HEADER...] -> prints "HTTP_CODE BODY"
  local url=$1 body=$2; shift 2
  curl -s -m 30 -w '\n%{http_code}' "$@" -H 'Content-Type: application/json' -d "$body" "$url"
}
transfer_ok() { # CELL URL_PREFIX [HEADER...]
  local c=$1 base=$2 out; shift 2
  out=$(post "$base/v1/transfers" \
    "{\"transfers\":[{\"id\":\"$(uuid)\",\"debit_account_id\":\"${ACCT_A[$c]}\",\"credit_account_id\":\"${ACCT_B[$c]}\",\"amount\":100,\"ledger\":840,\"code\":1}]}" \
    -H "Authorization: Bearer ${KEY[$c]}" "$@")
  [ "$(tail -1 <<<"$out")" = 200 ] && [ "$(head -1 <<<"$out" | jq -r '.results[0].result' 2>/dev/null)" = ok ]
}
for c in us eu; do
  dsn=$(bash "$src/scripts/lab.sh" dsn --dir "$lab" "$c")
  KEY[$c]=$("$ctl" --config "$lab/cells/$c/meridiand.conf" --dsn "$dsn" --json \
             apikey create --customer "itest-$c" 2>/dev/null | jq -r '.key // empty')
  check "an API key for cell $c" test -n "${KEY[$c]}"
  ACCT_A[$c]=$(uuid); ACCT_B[$c]=$(uuid)
  out=$(post "http://127.0.0.1:$GLOBAL_PORT/cells/$c/v1/accounts" \
    "{\"accounts\":[{\"id\":\"${ACCT_A[$c]}\",\"ledger\":840,\"code\":1},{\"id\":\"${ACCT_B[$c]}\",\"ledger\":840,\"code\":1}]}" \
    -H "Authorization: Bearer ${KEY[$c]}")
  check "cell $c: two accounts through the global entry (/cells/$c/ prefix)" \
    test "$(head -1 <<<"$out" | jq '[.results[] | select(.result == "ok")] | length' 2>/dev/null)" = 2
  check "cell $c: a transfer through the global entry (X-Meridian-Cell header)" \
    transfer_ok "$c" "http://127.0.0.1:$GLOBAL_PORT" -H "X-Meridian-Cell: $c"
done
# A key of one cell is refused by the other: routing is by cell, not by
# luck. The key names its cell (mk_us_...), so cell eu says so: 421.
out=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${KEY[us]}" \
      "http://127.0.0.1:$GLOBAL_PORT/cells/eu/v1/accounts/${ACCT_A[us]}")
check "cell us's key is refused by cell eu (HTTP $out)" test "$out" = 421
# A key of the older shape (mk_ + 43) names no cell: without header, prefix
# or per-cell port the global entry cannot route it (a key naming its cell
# routes by itself: itest_routing.sh).
out=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer mk_$(printf 'A%.0s' $(seq 1 43))" \
      "http://127.0.0.1:$GLOBAL_PORT/v1/balances")
check "a request naming no cell gets 421 from the global entry (HTTP $out)" test "$out" = 421

# ---- the WAN: a request to a remote etcd member through its netem link
rtt_ms() { curl -s -o /dev/null -m 5 -w '%{time_total}' "$1" | awk '{ printf "%d", $1 * 1000 }'; }
best=999999
for _ in 1 2 3; do
  r=$(rtt_ms "http://127.0.0.1:$LINK_ETCD_ETCD_EU_FROM_US_EAST/version")
  [ -n "$r" ] && [ "$r" -lt "$best" ] && best=$r
done
check "us-east -> etcd-eu through netem takes >= 80 ms (fastest of 3: $best ms)" test "$best" -ge 80 -a "$best" -lt 5000

# ---- fault: kill cell eu's primary
old=$(leader eu)
t_fault=$(date +%s)
"$ctl" lab fault --dir "$lab" node-kill "$old" >/dev/null 2>&1
check "fault node-kill $old" test $? -eq 0
new=""
for _ in $(seq 1 $((FAILOVER_MAX_S * 2))); do
  new=$(leader eu)
  [ -n "$new" ] && [ "$new" != "$old" ] && break
  new=""
  sleep 0.5
done
check "cell eu has a new leader ($new) within $FAILOVER_MAX_S s ($(( $(date +%s) - t_fault )) s)" test -n "$new"
recovered=1
for _ in $(seq 1 30); do
  transfer_ok eu "http://127.0.0.1:$GLOBAL_EU" && { recovered=0; break; }
  sleep 1
done
check "transfers through the global entry succeed again for cell eu ($(( $(date +%s) - t_fault )) s after the fault)" \
  test "$recovered" = 0
check "cell us is unaffected" transfer_ok us "http://127.0.0.1:$GLOBAL_US"

# ---- down: nothing left
st=$(status_json)
pids=$(jq -r '.processes[] | select(.pid) | .pid' <<<"$st" 2>/dev/null | xargs)
for f in "$lab"/pids/*; do [ -f "$f" ] && pids="$pids $(head -1 "$f" | tr -dc 0-9)"; done
ports=$(grep -E '^(ETCD_CLIENT|ETCD_PEER|PG|METRICS|LINK|MD|HAPROXY|GLOBAL)_[A-Z0-9_]*=[0-9]+$|^(NETEM_CONTROL|GLOBAL_PORT)=' "$lab/env" | cut -d= -f2 | xargs)
"$ctl" lab down --dir "$lab" >"$work/down.out" 2>&1
check "lab down" test $? -eq 0
down_done=1
left=""
for p in $pids; do
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$lab/" && left="$left $p"
done
check "no process of the lab is left ($(echo "$pids" | wc -w) PIDs checked)" test -z "$left"
busy=""
for p in $ports; do ss -ltnH "sport = :$p" 2>/dev/null | grep -q . && busy="$busy $p"; done
check "no port of the lab is listening ($(echo "$ports" | wc -w) ports checked)${busy:+: $busy}" test -z "$busy"

finish
