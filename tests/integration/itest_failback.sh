#!/usr/bin/env bash
# itest_failback.sh — partition, heal, rejoin and planned failback on the
# running two-region lab (issue 4 items 6 and 7; docs/FAILOVER.md
# "Partition and failback"):
#   1. `lab up`; the DR standby us-dr1 replicates through the WAN emulator
#      (pg_stat_wal_receiver's sender port is the netem link, not us-n1);
#   2. a writer moves money on cell us through the global entry and
#      records every acknowledged id with the time of the acknowledgement;
#   3. `lab fault partition us-east`: us-dr1 takes the cell (automatic
#      policy) and the writer is acknowledged again;
#   4. `lab fault heal`: us-n1 (the fenced old primary) and us-n2/us-n3
#      (which received WAL from us-n1 after us-dr1 last did) rejoin as
#      standbys of us-dr1 by pg_rewind with no manual step, through the
#      netem links, and rewinds/<epoch>-us-n1 reports what was discarded;
#   5. `switchover --to-region` refusals, then `switchover --cell us
#      --to-region us-east`: the leader is back in us-east at a new epoch,
#      the writer goes on, us-dr1 follows the new leader as a DR standby;
#   6. every transfer acknowledged after the heal is on the final leader
#      exactly once (zero loss for the failback), those acknowledged before
#      are missing at most as many as the discarded WAL can hold, the
#      balances add up; `lab down` leaves no process.
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
PROMOTE_WAIT_S=${PROMOTE_WAIT_S:-60} # partition -> us-dr1 leads (lease 6 s + policy 10 s + ...)
REJOIN_WAIT_S=${REJOIN_WAIT_S:-90}   # heal -> the three US nodes stream from us-dr1
# A transfer carries 3750 random bytes (base64): its WAL is at least that.
MIN_WAL_PER_TRANSFER=3750

# shellcheck disable=SC1091
. "$here/tap.sh"
now_ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

work=$(mktemp -d /tmp/meridian-itest-failback-XXXXXX)
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
# etcd as eu-west sees it (etcd-eu direct, the witness through netem): it
# answers during the partition, when etcd-us is frozen.
etcd_() { env -u ETCD_ENDPOINTS "$ETCDCTL_BIN" --endpoints "$ETCD_EPS_EU_WEST" --dial-timeout 2s --command-timeout 3s "$@" 2>/dev/null; }
leader_json() { etcd_ get --print-value-only /meridian/us/leader; }
status_json() { "$ctl" --json status --cell us --etcd "$ETCD_EPS_EU_WEST" 2>/dev/null; }
sql() { local port=$1; shift; "$PSQL" -h 127.0.0.1 -p "$port" -U postgres -d meridian -XtAqc "$@" 2>/dev/null; }
pg_port() { local v; v="PG_$(echo "$1" | tr '[:lower:]-' '[:upper:]_')"; echo "${!v:-}"; }
link_port() { local v; v="LINK_$(echo "$1" | tr '[:lower:]-' '[:upper:]_')"; echo "${!v:-}"; }

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
old_leader=$(leader_json | jq -r '.node // empty')
old_epoch=$(leader_json | jq -r '.epoch // empty')
check "cell us starts led from us-east ($old_leader, epoch $old_epoch)" \
  test "$(leader_json | jq -r '.region // empty')" = us-east
check "the DR keeper runs the automatic policy" grep -q -- '--region-failover automatic' "$lab/cmd/keeper-us-dr1"

# Replication to us-dr1 crosses the WAN emulator (--advertise).
want=$(link_port "pg-$old_leader-from-eu-west")
got=""
for _ in $(seq 1 30); do
  got=$(sql "$PG_US_DR1" "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'")
  [ -n "$got" ] && break
  sleep 1
done
check "us-dr1 streams through netem link pg-$old_leader-from-eu-west (sender port ${got:-none}, link ${want:-?}, $old_leader listens on $(pg_port "$old_leader"))" \
  test -n "$want" -a "$got" = "$want"

# ---- the writer (two clients, ids and acknowledgement times recorded)
key=$(cat "$lab/cells/us/demo.key")
acct_a=$(uuid); acct_b=$(uuid)
out=$(curl -s -m 10 -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d "{\"accounts\":[{\"id\":\"$acct_a\",\"ledger\":840,\"code\":1},{\"id\":\"$acct_b\",\"ledger\":840,\"code\":1}]}" \
  "http://127.0.0.1:$GLOBAL_US/v1/accounts")
check "two cell-us accounts through the global entry" \
  test "$(jq '[.results[] | select(.result == "ok")] | length' <<<"$out" 2>/dev/null)" = 2
meta=$(head -c "$MIN_WAL_PER_TRANSFER" /dev/urandom | base64 -w0)
transfer() { # prints "id ack_ms" when acknowledged
  local id body code resp
  id=$(uuid)
  body="{\"transfers\":[{\"id\":\"$id\",\"debit_account_id\":\"$acct_a\",\"credit_account_id\":\"$acct_b\",\"amount\":1,\"ledger\":840,\"code\":1,\"metadata\":{\"note\":\"$meta\"}}]}"
  resp=$(curl -s -m 5 -w '\n%{http_code}' -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
         -d "$body" "http://127.0.0.1:$GLOBAL_US/v1/transfers")
  code=$(tail -1 <<<"$resp")
  [ "$code" = 200 ] && grep -q '"result":"ok"' <<<"$resp" && echo "$id $(now_ms)"
}
acked_since() { awk -v t="$1" '$2 > t' "$work/acked" | wc -l; }
wait_acked_since() { # T_MS MAX_S: true once a transfer was acknowledged after T_MS
  local t=$1 end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ "$(acked_since "$t")" -gt 0 ] && return 0
    sleep 0.5
  done
  return 1
}
: >"$work/acked"
for _ in 1 2; do
  ( while true; do transfer >>"$work/acked"; sleep 0.05; done ) &
  writer_pids="$writer_pids $!"
done
t0=$(now_ms)
sleep 5
check "the writer is acknowledged before the fault ($(acked_since "$t0") transfers in 5 s)" \
  test "$(acked_since "$t0")" -gt 0

# ---- partition
t_part=$(now_ms)
"$ctl" lab fault --dir "$lab" partition us-east >"$work/fault.out" 2>&1
check "lab fault partition us-east" test $? -eq 0
t_lead=""
deadline=$(( $(date +%s) + PROMOTE_WAIT_S ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  if [ "$(leader_json | jq -r '.node // empty' 2>/dev/null)" = us-dr1 ]; then t_lead=$(now_ms); break; fi
  sleep 0.5
done
check "us-dr1 leads cell us on its own ($( [ -n "$t_lead" ] && secs "$t_part" "$t_lead" || echo "not within $PROMOTE_WAIT_S") s after the partition)" \
  test -n "$t_lead"
dr_epoch=$(leader_json | jq -r '.epoch // 0')
check "  at a new epoch ($dr_epoch > $old_epoch), recorded as regional_failover" \
  test "$dr_epoch" -gt "$old_epoch" -a \
  "$(etcd_ get --print-value-only "/meridian/us/history/$(printf '%020d' "$dr_epoch")" | jq -r '.kind // empty')" = regional_failover
# The leader key comes first, the empty set with the promotion a moment later.
syncset_empty() {
  for _ in $(seq 1 40); do
    [ "$(etcd_ get --print-value-only /meridian/us/syncset | jq -r '.nodes | length')" = 0 ] && return 0
    sleep 0.25
  done
  return 1
}
check "  with an empty synchronous set until the home region streams again" syncset_empty
if wait_acked_since "${t_lead:-$t_part}" 60; then
  ok "the writer is acknowledged again through the global entry ($(secs "$t_part" "$(awk -v t="${t_lead:-$t_part}" '$2 > t { print $2; exit }' "$work/acked")") s after the partition)"
else
  not_ok "the writer is acknowledged again within 60 s of us-dr1 leading"
fi
sleep 3

# ---- heal: the US nodes rejoin as standbys of us-dr1 by themselves
t_heal=$(now_ms)
"$ctl" lab fault --dir "$lab" heal >>"$work/fault.out" 2>&1
check "lab fault heal" test $? -eq 0
t_rejoin=""
deadline=$(( $(date +%s) + REJOIN_WAIT_S ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  st=$(status_json)
  if [ "$(jq -r '[.nodes[] | select((.node | startswith("us-n")) and .streaming == true and .upstream == "us-dr1")] | length' <<<"$st" 2>/dev/null)" = 3 ]; then
    t_rejoin=$(now_ms); break
  fi
  sleep 1
done
check "us-n1, us-n2, us-n3 stream from us-dr1 ($( [ -n "$t_rejoin" ] && secs "$t_heal" "$t_rejoin" || echo "not within $REJOIN_WAIT_S") s after the heal)" \
  test -n "$t_rejoin"
[ -n "$t_rejoin" ] || { status_json | jq -c '.nodes[] | {node, state, streaming, upstream, why}' | sed 's/^/# /'; }
check "us-dr1 still leads, epoch unchanged ($dr_epoch)" \
  test "$(leader_json | jq -r '"\(.node) \(.epoch)"')" = "us-dr1 $dr_epoch"
for n in us-n1 us-n2 us-n3; do
  want=$(link_port "pg-us-dr1-from-us-east")
  got=$(sql "$(pg_port "$n")" "SELECT sender_port FROM pg_stat_wal_receiver")
  check "  $n's WAL receiver connects through netem link pg-us-dr1-from-us-east (port ${got:-none}, link ${want:-?})" \
    test -n "$want" -a "$got" = "$want"
done
# A rewound node's sender is in 'catchup' until it has reached us-dr1's
# current WAL (the writer keeps adding some): wait for 'streaming'.
n_streaming=0
deadline=$(( $(date +%s) + REJOIN_WAIT_S ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  n_streaming=$(sql "$PG_US_DR1" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name LIKE 'us-n%'")
  [ "$n_streaming" = 3 ] && break
  sleep 0.5
done
check "  us-dr1's pg_stat_replication shows the three US nodes streaming ($n_streaming of 3)" \
  test "$n_streaming" = 3
[ "$n_streaming" = 3 ] || sql "$PG_US_DR1" "SELECT application_name, state FROM pg_stat_replication" | sed 's/^/# /'
rw=$(etcd_ get --prefix --print-value-only /meridian/us/rewinds/ | jq -sc '.')
echo "# rewinds: $(jq -c '[.[] | {node, epoch, role, diverged_at, local_end, discarded_bytes}]' <<<"$rw")"
check "rewinds key for the old primary $old_leader at epoch $dr_epoch" \
  test "$(jq --arg n "$old_leader" --argjson e "$dr_epoch" '[.[] | select(.node == $n and .epoch == $e and .role == "primary")] | length' <<<"$rw")" = 1
check "  reports WAL past the promotion point (discarded_bytes > 0)" \
  test "$(jq --arg n "$old_leader" '[.[] | select(.node == $n) | .discarded_bytes] | max // 0' <<<"$rw")" -gt 0
discarded_max=$(jq '[.[] | .discarded_bytes] | max // 0' <<<"$rw")
grep -q "pg_rewind discarded" "$lab/logs/keeper-$old_leader.log" 2>/dev/null
check "  and the old primary's keeper logged it" test $? -eq 0

# ---- failback refusals
"$ctl" switchover --cell us --to-region mars --etcd "$ETCD_EPS_EU_WEST" >/dev/null 2>"$work/s1.err"
rc=$?
check "switchover --to-region mars: exit 1, unknown region (rc $rc)" \
  test "$rc" -eq 1 -a "$(grep -c 'unknown region mars' "$work/s1.err")" = 1
"$ctl" switchover --cell us --to-region eu-west --etcd "$ETCD_EPS_EU_WEST" >/dev/null 2>"$work/s2.err"
rc=$?
check "switchover --to-region eu-west while us-dr1 leads: exit 1, nothing to switch (rc $rc)" \
  test "$rc" -eq 1 -a "$(grep -c 'nothing to switch' "$work/s2.err")" = 1
"$ctl" switchover --cell eu --to-region us-east --etcd "$ETCD_EPS_EU_WEST" >/dev/null 2>"$work/s3.err"
rc=$?
check "switchover of cell eu to us-east: exit 1, no node of the cell there (rc $rc)" \
  test "$rc" -eq 1 -a "$(grep -c 'cell eu has no node in region us-east' "$work/s3.err")" = 1
"$ctl" switchover --cell us --to us-n1 --to-region us-east --etcd "$ETCD_EPS_EU_WEST" >/dev/null 2>&1
check "switchover with --to and --to-region: exit 2" test $? -eq 2
"$ctl" switchover --cell us --etcd "$ETCD_EPS_EU_WEST" >/dev/null 2>&1
check "switchover with neither: exit 2" test $? -eq 2

# ---- failback: the home nodes must be synchronous first (RENEW puts them back)
for _ in $(seq 1 30); do
  [ "$(etcd_ get --print-value-only /meridian/us/syncset | jq -r '[.nodes[] | select(startswith("us-n"))] | length')" -ge 1 ] && break
  sleep 1
done
t_sw=$(now_ms)
"$ctl" --json switchover --cell us --to-region us-east --timeout-s 60 --etcd "$ETCD_EPS_EU_WEST" >"$work/sw.json" 2>"$work/sw.err"
rc=$?
check "switchover --cell us --to-region us-east (rc $rc)" test "$rc" -eq 0
[ "$rc" = 0 ] || { cat "$work/sw.err"; cat "$work/sw.json"; }
echo "# switchover: $(jq -c '{from, to, chosen, to_region, old_epoch, epoch, write_pause_ms, leader_absent_ms}' "$work/sw.json" 2>/dev/null)"
new_leader=$(leader_json | jq -r '.node // empty')
new_epoch=$(leader_json | jq -r '.epoch // 0')
check "  the leader is back in us-east ($new_leader, chosen $(jq -r '.chosen // "?"' "$work/sw.json" 2>/dev/null))" \
  test "$(leader_json | jq -r '.region // empty')" = us-east -a "$new_leader" = "$(jq -r '.chosen // empty' "$work/sw.json" 2>/dev/null)"
check "  at a new epoch ($new_epoch > $dr_epoch), recorded as switchover" \
  test "$new_epoch" -gt "$dr_epoch" -a \
  "$(etcd_ get --print-value-only "/meridian/us/history/$(printf '%020d' "$new_epoch")" | jq -r '.kind // empty')" = switchover
if wait_acked_since "$(now_ms)" 45; then ok "the writer goes on after the failback"; else not_ok "the writer is acknowledged within 45 s after the failback"; fi
dr_ok=0
for _ in $(seq 1 60); do
  st=$(status_json)
  if [ "$(jq -r --arg l "$new_leader" '[.nodes[] | select(.node == "us-dr1" and .streaming == true and .upstream == $l and .role == "standby")] | length' <<<"$st" 2>/dev/null)" = 1 ]; then dr_ok=1; break; fi
  sleep 1
done
check "us-dr1 follows $new_leader as a standby again (DR, through netem)" test "$dr_ok" = 1
check "  its WAL receiver connects through netem link pg-$new_leader-from-eu-west" \
  test "$(sql "$PG_US_DR1" "SELECT sender_port FROM pg_stat_wal_receiver")" = "$(link_port "pg-$new_leader-from-eu-west")"
check "  and the synchronous set holds no DR standby" \
  test "$(etcd_ get --print-value-only /meridian/us/syncset | jq -r '[.nodes[] | select(. == "us-dr1")] | length')" = 0
sleep 2
stop_writer

# ---- every acknowledged transfer on the final leader
port=$(pg_port "$new_leader")
n_all=$(wc -l <"$work/acked")
awk -v t="$t_heal" '$2 > t { print $1 }' "$work/acked" >"$work/after"
awk -v t="$t_heal" '$2 <= t { print $1 }' "$work/acked" >"$work/before"
count_present() { # FILE -> "present distinct"
  if [ ! -s "$1" ]; then echo "0 0"; return; fi
  sql "$port" "SELECT count(*) || ' ' || count(DISTINCT id) FROM transfers WHERE id IN ($(sed "s/.*/'&'/" "$1" | paste -sd,))"
}
read -r a_rows a_distinct < <(count_present "$work/after")
n_after=$(wc -l <"$work/after")
check "all $n_after transfers acknowledged after the heal are on $new_leader exactly once ($a_rows rows, $a_distinct ids)" \
  test "$n_after" -gt 0 -a "$a_rows" = "$n_after" -a "$a_distinct" = "$n_after"
read -r b_rows b_distinct < <(count_present "$work/before")
n_before=$(wc -l <"$work/before")
lost=$(( n_before - b_distinct ))
bound=$(( (discarded_max + MIN_WAL_PER_TRANSFER - 1) / MIN_WAL_PER_TRANSFER ))
echo "# loss: $lost of $n_before transfers acknowledged before the heal are missing; rewinds report $discarded_max bytes discarded (at most $bound transfers)"
if [ "$lost" -gt 0 ]; then # when were the lost ones acknowledged, relative to the cut?
  sql "$port" "SELECT id FROM transfers WHERE id IN ($(sed "s/.*/'&'/" "$work/before" | paste -sd,))" >"$work/present"
  awk -v t="$t_heal" '$2 <= t' "$work/acked" | grep -v -F -f "$work/present" |
    awk -v p="$t_part" 'NR == 1 { lo = $2; hi = $2 } { if ($2 < lo) lo = $2; if ($2 > hi) hi = $2 }
      END { printf "# the missing ones were acknowledged from %+.1f s to %+.1f s after the partition\n", (lo - p) / 1000, (hi - p) / 1000 }'
fi
check "  those acknowledged before the heal: each at most once ($b_rows rows, $b_distinct ids), $lost missing <= $bound (the reported discarded WAL)" \
  test "$b_rows" = "$b_distinct" -a "$lost" -le "$bound"
sums=$(sql "$port" "SELECT coalesce(sum(debits_posted), 0) - coalesce(sum(credits_posted), 0) FROM accounts WHERE ledger = 840")
check "balances sum to zero on $new_leader (debits - credits = ${sums:-?})" test "${sums:-x}" = 0
bad=$(sql "$port" "SELECT count(*) FROM accounts a WHERE a.id IN ('$acct_a', '$acct_b') AND (
  a.debits_posted <> (SELECT coalesce(sum(amount), 0) FROM transfers t WHERE t.debit_account_id = a.id)
  OR a.credits_posted <> (SELECT coalesce(sum(amount), 0) FROM transfers t WHERE t.credit_account_id = a.id))")
check "  and each account's balance is the sum of its transfers" test "${bad:-x}" = 0
echo "# $n_all acknowledged in all; partition at +$(secs "$t0" "$t_part") s, us-dr1 led +$(secs "$t_part" "${t_lead:-$t_part}") s later, rejoin $(secs "$t_heal" "${t_rejoin:-$t_heal}") s after the heal, switchover write pause $(jq -r '.write_pause_ms // "?"' "$work/sw.json" 2>/dev/null) ms"

# ---- down
"$ctl" lab down --dir "$lab" >"$work/down.out" 2>&1
check "lab down" test $? -eq 0
down_done=1
left=$(ps -eo pid=,args= | grep -F -- "$lab/" | grep -v grep)
check "no process of the lab is left" test -z "$left"
[ -z "$left" ] || echo "$left" | sed 's/^/# left: /'
finish
