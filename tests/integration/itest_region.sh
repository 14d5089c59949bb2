#!/usr/bin/env bash
# itest_region.sh — regional failover and the residency scan on the
# running two-region lab (issue 4 items 5 and 11; docs/TOPOLOGY.md
# "Regional failover" and "Residency scan"):
#   1. `lab up`; `residency scan` finds 0 violations after checking every
#      node's data directory and the cross-region replication to us-dr1;
#      judged against a stricter topology (cell us kept in us-east) the
#      same lab shows the violations, so the scan can fail;
#   2. `failover` refuses while cell us has a leader, and on bad input;
#   3. with a writer moving money through the global entry, `lab fault
#      region-loss us-east`; the DR standby us-dr1 promotes on its own
#      (automatic policy) or, when the lab's keepers run the manual
#      policy or it does not happen in time, `failover --yes` promotes it;
#   4. us-dr1 leads cell us, the history says regional_failover, writes
#      through the global entry succeed again, the acknowledged transfers
#      lost are within the printed loss bound, and the scan still finds 0
#      violations with the home region down; `lab down`.
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
PSQL=/usr/lib/postgresql/15/bin/psql
AUTO_WAIT_S=${AUTO_WAIT_S:-90}    # automatic policy: how long the DR standby may take
MANUAL_WAIT_S=${MANUAL_WAIT_S:-20} # manual policy: time for the old leader key to lapse

# shellcheck disable=SC1091
. "$here/tap.sh"

work=$(mktemp -d /tmp/meridian-itest-region-XXXXXX)
chmod 755 "$work"
lab="$work/lab"
down_done=0
writer_pids=""
stop_writer() {
  local p
  for p in $writer_pids; do kill "$p" 2>/dev/null; done
  for p in $writer_pids; do wait "$p" 2>/dev/null; done
  writer_pids=""
}
cleanup() {
  stop_writer
  [ "$down_done" = 1 ] || "$ctl" lab down --dir "$lab" >/dev/null 2>&1
  if [ "$failed" -eq 0 ]; then rm -rf "$work"; else echo "# lab logs kept in $lab/logs"; fi
}
trap cleanup EXIT

uuid() { cat /proc/sys/kernel/random/uuid; }
etcd_() { env -u ETCD_ENDPOINTS "$ETCDCTL_BIN" --endpoints "$ETCD_DIRECT" --dial-timeout 2s --command-timeout 3s "$@" 2>/dev/null; }

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

# ---- residency scan on the healthy lab
"$ctl" --json residency scan --dir "$lab" >"$work/scan1.json" 2>"$work/scan1.err"
rc=$?
check "residency scan exits 0 on the healthy lab (rc $rc)" test "$rc" -eq 0
s1=$(cat "$work/scan1.json")
check "scan: 0 violations" test "$(jq -r '.violation_count' <<<"$s1" 2>/dev/null)" = 0
dd=$(jq -r '.checked.data_directories' <<<"$s1" 2>/dev/null)
check "scan checked >= 7 data directories ($dd)" test "${dd:-0}" -ge 7
check "scan checked every node's data directory (us-n1..3, us-dr1, eu-n1..3)" \
  test "$(jq -r '[.objects[] | select(.kind == "data-directory") | .object | capture("node (?<n>[a-z0-9-]+)").n] | unique | join(" ")' <<<"$s1" 2>/dev/null)" = "eu-n1 eu-n2 eu-n3 us-dr1 us-n1 us-n2 us-n3"
xr=$(jq -r '.checked.replication_cross_region' <<<"$s1" 2>/dev/null)
check "scan saw >= 1 replication connection across regions ($xr)" test "${xr:-0}" -ge 1
check "scan: the cross-region connection is cell us's WAL to us-dr1 in eu-west" \
  test "$(jq -r '[.objects[] | select(.kind == "replication" and .cross_region and .cell == "us" and .region == "eu-west" and (.object | test("-> us-dr1")))] | length' <<<"$s1" 2>/dev/null)" -ge 1
check "scan: every cell-eu object is in eu-west" \
  test "$(jq -r '[.objects[] | select(.cell == "eu" and .region != "eu-west")] | length' <<<"$s1" 2>/dev/null)" = 0
check "scan: every meridiand was checked (5)" test "$(jq -r '.checked.meridiand' <<<"$s1" 2>/dev/null)" = 5
check "scan: backups and caches reported as not running" \
  test "$(jq -r '[.not_running[] | select(test("not running"))] | length' <<<"$s1" 2>/dev/null)" = 2
"$ctl" residency scan --dir "$lab" >"$work/scan1.txt" 2>&1
check "scan text ends with '0 violations'" grep -q '^0 violations' "$work/scan1.txt"

# The same lab judged by a topology that keeps cell us in us-east only:
# the scan must find cell us's data in eu-west.
jq '(.cells[] | select(.name == "us")) |= (.allowed_regions = ["us-east"] | del(.cross_border_jurisdictions)
     | .nodes |= map(select(.role != "dr-standby")) | .backups |= map(select(.region == "us-east"))
     | .caches |= map(select(.region == "us-east")) | .meridiand |= map(select(.region == "us-east"))
     | .failover = {"mode": "manual"})' "$lab/topology.json" >"$work/strict.json"
"$ctl" --json residency scan --dir "$lab" --topology "$work/strict.json" >"$work/scan-strict.json" 2>/dev/null
rc=$?
check "scan against a us-east-only topology exits 1 (rc $rc)" test "$rc" -eq 1
check "  and names us-dr1's data directory in eu-west under residency.allowed-regions" \
  test "$(jq -r '[.violations[] | select(.rule == "residency.allowed-regions" and .region == "eu-west" and (.object | test("nodes/us-dr1/data")))] | length' "$work/scan-strict.json" 2>/dev/null)" = 1

# ---- failover refusals
"$ctl" failover --cell us --to-region eu-west --dir "$lab" >"$work/f1.out" 2>"$work/f1.err"
rc=$?
check "failover while cell us has a leader is refused (rc $rc)" test "$rc" -eq 1
check "  with the leader message" grep -q 'the cell has a leader (us-n1, epoch 1): use `switchover` for a planned move; a regional failover is for a lost home region' "$work/f1.err"
"$ctl" failover --cell us --to-region eu-west --yes --dir "$lab" >/dev/null 2>&1
rc=$?
check "failover --yes while cell us has a leader is refused too (rc $rc)" test "$rc" -eq 1
check "  and wrote no request" test -z "$(etcd_ get --print-value-only /meridian/us/failover)"
"$ctl" failover --cell us --to-region us-east --dir "$lab" >/dev/null 2>"$work/f2.err"
rc=$?
check "failover to a region without a DR standby: exit 1, says so (rc $rc)" \
  test "$rc" -eq 1 -a "$(grep -c 'no DR standby in us-east' "$work/f2.err")" = 1
"$ctl" failover --cell nosuch --to-region eu-west --dir "$lab" >/dev/null 2>"$work/f3.err"
rc=$?
check "failover of an unknown cell: exit 1, says so (rc $rc)" \
  test "$rc" -eq 1 -a "$(grep -c 'unknown cell nosuch' "$work/f3.err")" = 1
"$ctl" failover --cell us --dir "$lab" >/dev/null 2>&1
check "failover without --to-region: exit 2" test $? -eq 2
"$ctl" failover --cell us --to-region eu-west --etcd http://127.0.0.1:1 >/dev/null 2>"$work/f4.err"
rc=$?
check "failover with etcd unreachable: exit 1, says so (rc $rc)" \
  test "$rc" -eq 1 -a "$(grep -c 'cannot reach etcd' "$work/f4.err")" = 1

# ---- a writer on cell us through the global entry (5 KB metadata each)
key=$(cat "$lab/cells/us/demo.key")
acct_a=$(uuid); acct_b=$(uuid)
out=$(curl -s -m 10 -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d "{\"accounts\":[{\"id\":\"$acct_a\",\"ledger\":840,\"code\":1},{\"id\":\"$acct_b\",\"ledger\":840,\"code\":1}]}" \
  "http://127.0.0.1:$GLOBAL_US/v1/accounts")
check "two cell-us accounts through the global entry" \
  test "$(jq '[.results[] | select(.result == "ok")] | length' <<<"$out" 2>/dev/null)" = 2
# 5,000 random characters: the requirements' average transfer size, and
# incompressible, so each transfer writes its share of WAL.
meta=$(head -c 3750 /dev/urandom | base64 -w0)
transfer() { # prints the id when acknowledged
  local id body code
  id=$(uuid)
  body="{\"transfers\":[{\"id\":\"$id\",\"debit_account_id\":\"$acct_a\",\"credit_account_id\":\"$acct_b\",\"amount\":1,\"ledger\":840,\"code\":1,\"metadata\":{\"note\":\"$meta\"}}]}"
  out=$(curl -s -m 5 -w '\n%{http_code}' -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -d "$body" "http://127.0.0.1:$GLOBAL_US/v1/transfers")
  code=$(tail -1 <<<"$out")
  [ "$code" = 200 ] && grep -q '"result":"ok"' <<<"$out" && echo "$id"
}
: >"$work/acked"
# Two writers; each appends whole lines.
for _ in 1 2; do
  ( while true; do transfer >>"$work/acked"; done ) &
  writer_pids="$writer_pids $!"
done
sleep 6
n_before=$(wc -l <"$work/acked")
check "the writers are acknowledged before the fault ($n_before transfers in 6 s)" test "$n_before" -gt 0

# ---- region loss
policy=manual
grep -q -- '--region-failover automatic' "$lab/cmd/keeper-us-dr1" 2>/dev/null && policy=automatic
t_fault=$(date +%s%3N)
"$ctl" lab fault --dir "$lab" region-loss us-east >"$work/fault.out" 2>&1
check "lab fault region-loss us-east" test $? -eq 0
wait_s=$MANUAL_WAIT_S
[ "$policy" = automatic ] && wait_s=$AUTO_WAIT_S
echo "# the DR keeper runs the $policy policy: waiting up to $wait_s s for it to promote on its own"
auto=0
bound_json=""
deadline=$(( $(date +%s) + wait_s ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  j=$("$ctl" --json failover --cell us --to-region eu-west --dir "$lab" 2>/dev/null)
  rc=$?
  if [ "$rc" = 0 ] && [ "$(jq -r '.already' <<<"$j" 2>/dev/null)" = true ]; then auto=1; break; fi
  if [ "$rc" = 3 ]; then
    [ -n "$bound_json" ] || bound_json=$j
    [ "$policy" = manual ] && break # nothing will promote it but the request
  fi
  sleep 1
done
if [ -n "$bound_json" ]; then
  check "failover without --yes after the loss prints the bound and exits 3" \
    test "$(jq -r '.needs_confirmation and .loss_bound.known' <<<"$bound_json" 2>/dev/null)" = true
  "$ctl" failover --cell us --to-region eu-west --dir "$lab" >"$work/f5.out" 2>/dev/null
  rc=$?
  if [ "$rc" = 3 ]; then
    check "  text: 're-run with --yes to promote DR in eu-west'" grep -q 're-run with --yes to promote DR in eu-west' "$work/f5.out"
    check "  text: WAL gap in bytes, as LSNs, lag and transfer estimate" \
      grep -q 'WAL gap .* bytes (.*/.* \.\. .*/.*)' "$work/f5.out"
    sed 's/^/# /' "$work/f5.out"
  fi
fi
bound_gap=""; bound_est=""
if [ "$auto" = 1 ]; then
  ok "us-dr1 promoted on its own (automatic policy) $(( ($(date +%s%3N) - t_fault) / 1000 )) s after the fault"
else
  [ "$policy" = automatic ] && echo "# us-dr1 did not promote on its own within $wait_s s: requesting it"
  "$ctl" --json failover --cell us --to-region eu-west --yes --timeout-s 60 --dir "$lab" >"$work/f6.json" 2>"$work/f6.err"
  rc=$?
  check "failover --cell us --to-region eu-west --yes promotes (rc $rc, $(( ($(date +%s%3N) - t_fault) / 1000 )) s after the fault)" test "$rc" -eq 0
  [ "$rc" = 0 ] || cat "$work/f6.err"
  check "  to us-dr1 at epoch 2, recorded as regional_failover" \
    test "$(jq -r '"\(.dr_node) \(.epoch) \(.event.kind)"' "$work/f6.json" 2>/dev/null)" = "us-dr1 2 regional_failover"
  bound_gap=$(jq -r '.loss_bound.gap_bytes // empty' "$work/f6.json" 2>/dev/null)
  bound_est=$(jq -r '.loss_bound.transfers_estimate // empty' "$work/f6.json" 2>/dev/null)
  echo "# failover: $(jq -c '{loss_bound: .loss_bound | {leader_lsn, dr_lsn, gap_bytes, dr_lag_ms, transfers_estimate}, event: .event | {detection_ms, promotion_ms, leader_lost_to_promoted_ms}, request_to_promoted_ms}' "$work/f6.json" 2>/dev/null)"
fi
if [ -z "$bound_gap" ] && [ -n "$bound_json" ]; then
  bound_gap=$(jq -r '.loss_bound.gap_bytes // empty' <<<"$bound_json")
  bound_est=$(jq -r '.loss_bound.transfers_estimate // empty' <<<"$bound_json")
fi

# ---- after promotion
leader=$(etcd_ get --print-value-only /meridian/us/leader | jq -r '.node // empty' 2>/dev/null)
check "cell us is led by us-dr1 ($leader)" test "$leader" = us-dr1
check "cell us's leader key names region eu-west" \
  test "$(etcd_ get --print-value-only /meridian/us/leader | jq -r '.region // empty' 2>/dev/null)" = eu-west
check "history has a regional_failover event by us-dr1" \
  test "$(etcd_ get --prefix --print-value-only /meridian/us/history/ | jq -s '[.[] | select(.kind == "regional_failover" and .node == "us-dr1")] | length' 2>/dev/null)" -ge 1
check "the failover request was consumed" test -z "$(etcd_ get --print-value-only /meridian/us/failover)"
resumed=""
for _ in $(seq 1 60); do
  resumed=$(transfer) && [ -n "$resumed" ] && break
  resumed=""
  sleep 1
done
check "a transfer to cell us through the global entry succeeds after the failover ($(( ($(date +%s%3N) - t_fault) / 1000 )) s after the fault)" \
  test -n "$resumed"
stop_writer
n_total=$(wc -l <"$work/acked")
# Measured loss: acknowledged transfers missing on the new primary.
lost=0
if [ -s "$work/acked" ]; then
  ids=$(sed "s/.*/'&'/" "$work/acked" | paste -sd,)
  present=$("$PSQL" -h 127.0.0.1 -p "$PG_US_DR1" -U postgres -d meridian -XtAqc \
            "SELECT count(*) FROM transfers WHERE id IN ($ids)" 2>/dev/null)
  lost=$(( n_total - ${present:-0} ))
fi
resumed_present=$("$PSQL" -h 127.0.0.1 -p "$PG_US_DR1" -U postgres -d meridian -XtAqc \
                  "SELECT count(*) FROM transfers WHERE id = '${resumed:-00000000-0000-0000-0000-000000000000}'" 2>/dev/null)
check "the transfer after the failover is on us-dr1" test "${resumed_present:-0}" = 1
# The history, as `meridianctl history` reads it: the regional failover
# with its loss bound, meridiand's first acknowledged write (the RTO) and
# the follower's routing switch to eu-west.
hist=$("$ctl" --json --config "$lab/cells/us/meridiand.conf" history --cell us 2>"$work/hist.err")
ev=$(jq -c '[.events[] | select(.kind == "regional_failover")] | last' <<<"$hist" 2>/dev/null)
check "history: the regional failover has an RTO (first write after the loss: $(jq -r .rto_ms <<<"$ev" 2>/dev/null) ms)" \
  test "$(jq -r '.rto_ms != null and .rto_ms > 0' <<<"$ev" 2>/dev/null)" = true
check "history: and its loss bound ($(jq -r .loss_bound_bytes <<<"$ev" 2>/dev/null) bytes, $(jq -r .loss_bound_ms <<<"$ev" 2>/dev/null) ms)" \
  test "$(jq -r '.loss_bound_bytes != null and .loss_bound_ms != null' <<<"$ev" 2>/dev/null)" = true
check "history: and the routing switch to eu-west ($(jq -r .routing_switch_ms <<<"$ev" 2>/dev/null) ms after the loss)" \
  test "$(jq -r '.routed_region' <<<"$ev" 2>/dev/null)" = eu-west
# The bound is as of the last published leader LSN; allow the traffic of
# one second on top (a keeper loop plus the WAN delay of what was in flight).
rate=$(( (n_before + 5) / 6 ))
echo "# loss: bound printed ${bound_gap:-?} bytes (~${bound_est:-?} transfers, estimate); measured $lost of $n_total acknowledged transfers missing on us-dr1 (writer ~$rate/s)"
check "acknowledged transfers lost ($lost) within the printed bound (~${bound_est:-0}) + 1 s of traffic ($rate)" \
  test "$lost" -le $(( ${bound_est:-0} + rate ))

"$ctl" --json residency scan --dir "$lab" >"$work/scan2.json" 2>/dev/null
rc=$?
check "residency scan after the failover: exit 0, 0 violations (rc $rc)" \
  test "$rc" -eq 0 -a "$(jq -r '.violation_count' "$work/scan2.json" 2>/dev/null)" = 0
check "  still checks the 7 data directories (us-east's at rest)" \
  test "$(jq -r '.checked.data_directories' "$work/scan2.json" 2>/dev/null)" -ge 7
check "  and reports the down PostgreSQL nodes as unreachable, not as fine" \
  test "$(jq -r '[.unreachable[] | select(test("postgres of us-n[123] is not running"))] | length' "$work/scan2.json" 2>/dev/null)" = 3
check "  and finds us-east's data still of cell us (lineage of the new leader)" \
  test "$(jq -r '[.objects[] | select(.kind == "data-directory" and .cell == "us" and .region == "us-east")] | length' "$work/scan2.json" 2>/dev/null)" = 3

# ---- down
"$ctl" lab down --dir "$lab" >"$work/down.out" 2>&1
check "lab down" test $? -eq 0
down_done=1
finish
