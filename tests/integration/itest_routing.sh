#!/usr/bin/env bash
# itest_routing.sh — routing by the cell an API key names, the global
# entry following the region that serves a cell, and meridiand scale-up
# in that region (issue 4 items 8 and 5; docs/LAB.md "Routing", "The
# follower", "Scale-up"), on the running two-region lab:
#   1. `lab up`; the demo keys name their cell (mk_us_..., mk_eu_...);
#   2. a cell-named key reaches its cell through the global entry with no
#      header, prefix or per-cell port (the answer comes from the cell's
#      region); a key of cell eu sent to cell us gets 421 wrong_cell from
#      meridiand; a key naming no cell (the older shape) still works with
#      the header and gets 421 cell_required without it;
#   3. `lab fault region-loss us-east`: once us-dr1 leads cell us, the
#      global entry serves cell us from eu-west within FOLLOW_MAX_S, the
#      follower logged the route switch, and eu-west runs the topology's
#      scale_to (2) meridiand for cell us: PIDs alive, listed by `lab
#      status --json`, the scale-up event recorded;
#   4. `lab down` leaves no process (the follower and the scaled-up
#      instance included) and no port behind.
#
# Env: MERIDIAN_BIN_DIR (build directory), MERIDIAN_SOURCE_DIR (source
# tree). Prints "ok"/"not ok" lines and "N passed, M failed"; exits 1 on
# any failure (the lab's logs are kept then).
set -u
here=$(cd "$(dirname "$0")" && pwd)
export MERIDIAN_SOURCE_DIR=${MERIDIAN_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${MERIDIAN_BIN_DIR:?MERIDIAN_BIN_DIR must name the build directory}
ctl="$bin/meridianctl"
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
PROMOTE_MAX_S=${PROMOTE_MAX_S:-90}  # region loss -> us-dr1 leads (lease + policy's 10 s)
FOLLOW_MAX_S=${FOLLOW_MAX_S:-10}    # us-dr1 leads -> the global entry serves from eu-west
SCALE_MAX_S=${SCALE_MAX_S:-60}      # us-dr1 leads -> the extra instance is ready

# shellcheck disable=SC1091
. "$here/tap.sh"

work=$(mktemp -d /tmp/meridian-itest-routing-XXXXXX)
chmod 755 "$work"
lab="$work/lab"
down_done=0
cleanup() {
  [ "$down_done" = 1 ] || "$ctl" lab down --dir "$lab" >/dev/null 2>&1
  if [ "$failed" -eq 0 ]; then rm -rf "$work"; else echo "# lab logs kept in $lab/logs"; fi
}
trap cleanup EXIT

uuid() { cat /proc/sys/kernel/random/uuid; }
ms() { local t=${EPOCHREALTIME/./}; echo $(( t / 1000 )); }
status_json() { "$ctl" --json lab status --dir "$lab" 2>/dev/null; }
etcd_() { env -u ETCD_ENDPOINTS "$ETCDCTL_BIN" --endpoints "$ETCD_DIRECT" --dial-timeout 1s --command-timeout 2s "$@" 2>/dev/null; }
# METHOD URL KEY [BODY] [CURL ARGS...] -> "CODE REGION CODE_FIELD" (REGION from X-Meridian-Region)
call() {
  local method=$1 url=$2 key=$3 body=${4:-}; shift 4 2>/dev/null || shift $#
  local args=(-s -m 10 -X "$method" -D "$work/h" -o "$work/b" -H "Authorization: Bearer $key")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")
  curl "${args[@]}" "$@" "$url" >/dev/null 2>&1
  local code region pcode
  code=$(tr -d '\r' <"$work/h" 2>/dev/null | awk '/^HTTP\// {c = $2} END {print c}')
  region=$(tr -d '\r' <"$work/h" 2>/dev/null | awk 'tolower($1) == "x-meridian-region:" {r = $2} END {print r}')
  pcode=$(jq -r '.code // empty' "$work/b" 2>/dev/null)
  echo "${code:-000} ${region:--} ${pcode:--}"
}

# ---- up
t_up=$(date +%s)
if ! "$ctl" lab up --dir "$lab" >"$work/up.out" 2>"$work/up.err"; then
  tail -30 "$work/up.err"
  not_ok "lab up with topologies/lab.json"
  finish
fi
ok "lab up with topologies/lab.json in $(( $(date +%s) - t_up )) s"
# shellcheck disable=SC1091
. "$lab/env"
GLOBAL="http://127.0.0.1:$GLOBAL_PORT"
st=$(status_json)
check "the follower runs (tracked by PID in lab status)" \
  test "$(jq -r '[.processes[] | select(.name == "follower" and .alive)] | length' <<<"$st" 2>/dev/null)" = 1
check "the scale-up instance of cell us in eu-west is planned, not started" \
  test "$(jq -r '[.scale_up[] | select(.cell == "us" and .region == "eu-west" and (.started | not))] | length' <<<"$st" 2>/dev/null)" = 1

# ---- keys name their cell
declare -A KEY
for c in us eu; do
  KEY[$c]=$(cat "$lab/cells/$c/demo.key" 2>/dev/null)
  check "the demo key of cell $c names it (mk_${c}_ + 43)" \
    bash -c '[[ "$1" =~ ^mk_$2_[A-Za-z0-9_-]{43}$ ]]' _ "${KEY[$c]}" "$c"
done

# ---- routing by the key alone
declare -A ACCT
for c in us eu; do
  ACCT[$c]=$(uuid)
  want=us-east; [ "$c" = eu ] && want=eu-west
  r=$(call POST "$GLOBAL/v1/accounts" "${KEY[$c]}" "{\"accounts\":[{\"id\":\"${ACCT[$c]}\",\"ledger\":840,\"code\":1}]}")
  check "cell $c: an account through the global entry with only the key, no header ($r)" \
    test "${r%% *}" = 200 -a "$(jq -r '.results[0].result' "$work/b" 2>/dev/null)" = ok
  check "  answered by cell $c's region $want" test "$(echo "$r" | cut -d' ' -f2)" = "$want"
  r=$(call GET "$GLOBAL/v1/accounts/${ACCT[$c]}" "${KEY[$c]}")
  check "cell $c: the account reads back through the global entry by the key ($r)" test "${r%% *}" = 200
done
r=$(call GET "$GLOBAL/v1/accounts/${ACCT[eu]}" "${KEY[eu]}" "" -H "X-Meridian-Cell: eu")
check "an explicit X-Meridian-Cell header still routes ($r)" test "${r%% *}" = 200

# ---- the wrong cell: meridiand refuses with 421 wrong_cell
r=$(call GET "http://127.0.0.1:$GLOBAL_US/v1/balances" "${KEY[eu]}")
check "a key of cell eu on cell us's port: 421 wrong_cell ($r)" test "$r" = "421 us-east wrong_cell"
check "  the detail names both cells" grep -q 'key is of cell eu, this is cell us' "$work/b"
check "  as application/problem+json" grep -qi '^content-type: application/problem+json' "$work/h"
r=$(call GET "$GLOBAL/v1/balances" "${KEY[eu]}" "" -H "X-Meridian-Cell: us")
check "a key of cell eu with X-Meridian-Cell: us: 421 wrong_cell ($r)" test "${r#* }" = "us-east wrong_cell"

# ---- keys naming no cell (the older shape) stay valid
dsn=$(bash "$MERIDIAN_SOURCE_DIR/scripts/lab.sh" dsn --dir "$lab" us 2>/dev/null)
legacy=$("$ctl" --config "$lab/cells/us/meridiand.conf" --dsn "$dsn" --json \
  apikey create --customer demo-us --cell "" 2>/dev/null | jq -r '.key // empty')
check "apikey create --cell \"\" issues a key naming no cell" bash -c '[[ "$1" =~ ^mk_[A-Za-z0-9_-]{43}$ ]]' _ "$legacy"
r=$(call GET "$GLOBAL/v1/balances" "$legacy" "" -H "X-Meridian-Cell: us")
check "  it works on its cell with the header ($r)" test "${r%% *}" = 200
r=$(call GET "$GLOBAL/v1/balances" "$legacy")
check "  without header it gets 421 cell_required from the global entry ($r)" test "${r#* * }" = cell_required
named=$("$ctl" --config "$lab/cells/eu/meridiand.conf" --dsn "$(bash "$MERIDIAN_SOURCE_DIR/scripts/lab.sh" dsn --dir "$lab" eu 2>/dev/null)" \
  --json apikey create --customer demo-eu 2>/dev/null)
check "apikey create takes the cell from the config (cell eu, \"cell\":\"eu\")" \
  test "$(jq -r '.cell + " " + (.key | test("^mk_eu_") | tostring)' <<<"$named" 2>/dev/null)" = "eu true"

# ---- region loss: the global entry follows us-dr1 to eu-west, eu-west scales up
t_fault=$(ms)
"$ctl" lab fault --dir "$lab" region-loss us-east >"$work/fault.out" 2>&1
check "lab fault region-loss us-east" test $? -eq 0
t_lead=""
deadline=$(( $(date +%s) + PROMOTE_MAX_S ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  l=$(etcd_ get --print-value-only /meridian/us/leader | jq -r '.node // empty' 2>/dev/null)
  [ "$l" = us-dr1 ] && { t_lead=$(ms); break; }
  # The automatic policy promotes on its own; the manual request is the
  # fallback when the lab's keeper does not (exit 3 = needs --yes).
  if [ $(( $(date +%s) + 30 )) -ge "$deadline" ] && [ -z "${asked:-}" ]; then
    asked=1; "$ctl" failover --cell us --to-region eu-west --yes --dir "$lab" >/dev/null 2>&1 &
  fi
  sleep 0.2
done
wait 2>/dev/null
check "us-dr1 leads cell us ($(( ${t_lead:-$(ms)} - t_fault )) ms after the fault)" test -n "$t_lead"
[ -n "$t_lead" ] || finish
t_served=""
deadline=$(( $(date +%s) + FOLLOW_MAX_S + 20 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  r=$(call GET "$GLOBAL/v1/accounts/${ACCT[us]}" "${KEY[us]}")
  [ "${r% *}" = "200 eu-west" ] && { t_served=$(ms); break; }
  sleep 0.2
done
follow_ms=$(( ${t_served:-$(ms)} - t_lead ))
check "the global entry serves cell us from eu-west by the key alone ($follow_ms ms after us-dr1 led; limit ${FOLLOW_MAX_S} s)" \
  test -n "$t_served" -a "$follow_ms" -le $((FOLLOW_MAX_S * 1000))
id=$(uuid); id2=$(uuid)
r=$(call POST "$GLOBAL/v1/accounts" "${KEY[us]}" "{\"accounts\":[{\"id\":\"$id\",\"ledger\":840,\"code\":1}]}")
check "  and writes to cell us succeed there ($r)" test "${r%% *}" = 200 -a "$(jq -r '.results[0].result' "$work/b" 2>/dev/null)" = ok
r=$(call POST "$GLOBAL/v1/transfers" "${KEY[us]}" \
  "{\"transfers\":[{\"id\":\"$id2\",\"debit_account_id\":\"${ACCT[us]}\",\"credit_account_id\":\"$id\",\"amount\":5,\"ledger\":840,\"code\":1}]}")
check "  a transfer on cell us through the global entry after the failover ($r)" \
  test "${r%% *}" = 200 -a "$(jq -r '.results[0].result' "$work/b" 2>/dev/null)" = ok
ev=$(grep '"kind":"route","cell":"us","region":"eu-west"' "$lab/events.jsonl" 2>/dev/null | head -1)
check "the follower recorded the route switch of cell us to eu-west" test -n "$ev"
if [ -n "$ev" ]; then
  echo "# follower: $(grep 'cell us: leader us-dr1' "$lab/logs/follower.log" | head -1)"
fi

# Scale-up: eu-west goes from 1 to 2 meridiand for cell us.
ready=""
deadline=$(( t_lead / 1000 + SCALE_MAX_S ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  ready=$(grep '"kind":"scale-up-ready","cell":"us","region":"eu-west"' "$lab/events.jsonl" 2>/dev/null | head -1)
  [ -n "$ready" ] && break
  sleep 0.5
done
ra=$(jq -r '.ready_after_ms // "-"' <<<"$ready" 2>/dev/null)
check "the scale-up instance of cell us in eu-west became ready (${ra:--} ms after it started; $(( $(ms) - t_lead )) ms after us-dr1 led)" test -n "$ready"
st=$(status_json)
check "lab status --json: eu-west runs 2 meridiand of cell us, all alive" \
  test "$(jq -r '[.processes[] | select(.kind == "meridiand" and .cell == "us" and .region == "eu-west" and .alive)] | length' <<<"$st" 2>/dev/null)" = 2
check "lab status --json: the scale-up event (cell us, eu-west, 2 instances)" \
  test "$(jq -r '[.events[] | select(.kind == "scale-up" and .cell == "us" and .region == "eu-west" and .instances == 2)] | length' <<<"$st" 2>/dev/null)" = 1
alive_pids=0
for p in $(jq -r '.processes[] | select(.kind == "meridiand" and .cell == "us" and .region == "eu-west") | .pid // empty' <<<"$st" 2>/dev/null); do
  kill -0 "$p" 2>/dev/null && alive_pids=$((alive_pids + 1))
done
check "  their PIDs are alive ($alive_pids)" test "$alive_pids" = 2
hits=""
for _ in 1 2 3 4 5 6; do
  r=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MD_US_EU_WEST_2/readyz")
  hits="$hits$r "
done
check "the new instance answers /readyz ($hits)" grep -q 200 <<<"$hits"

# The follower restarted (`fault restart follower`) picks the running
# instance up instead of starting it twice.
fp=$(head -1 "$lab/pids/follower.pid" 2>/dev/null | tr -dc 0-9)
[ -n "$fp" ] && kill -KILL "$fp" 2>/dev/null
sleep 0.5
"$ctl" lab fault --dir "$lab" restart follower >/dev/null 2>&1
check "lab fault restart follower" test $? -eq 0
sleep 3
st=$(status_json)
check "  the follower runs again, eu-west still runs exactly 2 meridiand of cell us" \
  test "$(jq -r '[.processes[] | select(.name == "follower" and .alive)] | length' <<<"$st" 2>/dev/null)/$(jq -r '[.processes[] | select(.kind == "meridiand" and .cell == "us" and .region == "eu-west" and .alive)] | length' <<<"$st" 2>/dev/null)" = 1/2
check "  and started nothing twice (one scale-up event)" \
  test "$(grep -c '"kind":"scale-up",' "$lab/events.jsonl" 2>/dev/null)" = 1

# ---- down: nothing left
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
check "no process of the lab is left ($(echo "$pids" | wc -w) PIDs checked, follower and scaled-up instance included)" test -z "$left"
busy=""
for p in $ports; do ss -ltnH "sport = :$p" 2>/dev/null | grep -q . && busy="$busy $p"; done
check "no port of the lab is listening ($(echo "$ports" | wc -w) ports checked)${busy:+: $busy}" test -z "$busy"

finish
