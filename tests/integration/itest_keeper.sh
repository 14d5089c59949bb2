#!/usr/bin/env bash
# itest_keeper.sh — in-region failover on real servers: a 3-member etcd
# cluster, three PostgreSQL nodes each run by a meridian-keeper, and a
# write workload that records every acknowledged (synchronously
# committed) row. Faults: kill -9 of the primary's whole node (keeper and
# postmaster), the old primary coming back (pg_rewind), SIGSTOP of the
# primary's whole node for twice the lease TTL, then SIGCONT.
#
# The primary cut off from etcd (through meridian-netem) is the last fault.
#
# Asserts: exactly one writable primary at the end, standbys streaming
# and synchronous, every acknowledged row present exactly once after each
# failover, the epoch bumped by each promotion, writes back within the
# RTO bound, and a paused old primary fenced (never writable again until
# it rejoins as a standby). Everything started here is stopped by PID.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${MERIDIAN_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${MERIDIAN_BIN_DIR:?MERIDIAN_BIN_DIR must name the build directory}
PSQL=/usr/lib/postgresql/15/bin/psql
RTO_MAX_S=${RTO_MAX_S:-15}

# shellcheck disable=SC1091
. "$here/tap.sh"

lab=$(mktemp -d /tmp/meridian-itest-keeper-XXXXXX)
chmod 755 "$lab"
cell="$lab/cell"
workload_pid=
cleanup() {
  [ -n "$workload_pid" ] && kill "$workload_pid" 2>/dev/null && wait "$workload_pid" 2>/dev/null
  bash "$src/scripts/cell.sh" down "$cell" >/dev/null 2>&1
  if [ "$failed" -eq 0 ]; then rm -rf "$lab"; else echo "# logs kept in $cell"; fi
}
trap cleanup EXIT

cellsh() { bash "$src/scripts/cell.sh" "$1" "$cell" "${@:2}"; }
if ! cellsh up --name itest --meridiand 0 --netem --build "$bin" 2>"$lab/up.log"; then
  cat "$lab/up.log"
  not_ok "cell comes up (cell.sh up)"
  echo "$passed passed, $failed failed"
  exit 1
fi
# shellcheck disable=SC1091
. "$cell/env"
port_of() { local v="N${1}_PG_PORT"; echo "${!v}"; }
mport_of() { local v="N${1}_METRICS_PORT"; echo "${!v}"; }
etcd_get() { bash "$src/scripts/etcd.sh" ctl "$cell/etcd" get --print-value-only "/meridian/itest/$1" 2>/dev/null; }
leader_node() { cellsh leader 2>/dev/null; }
epoch() { etcd_get epoch; }
sql() { local n=$1; shift; "$PSQL" -h 127.0.0.1 -p "$(port_of "$n")" -U postgres -d meridian -XtAq -v ON_ERROR_STOP=1 -c "$@" 2>/dev/null; }
num() { echo "${1#n}"; }
wait_healthy() { cellsh wait-healthy "$2" >/dev/null 2>&1; }
syncset_size() { etcd_get syncset | tr ',' '\n' | grep -c '"n'; }

check "cell bootstraps: one primary, two synchronous standbys streaming" wait_healthy 2 60
check "epoch is 1 after bootstrap" test "$(epoch)" = "1"
L=$(leader_node)
sql "$(num "$L")" "CREATE TABLE bank (id int PRIMARY KEY, node text NOT NULL)" >/dev/null
check "meridian_fencing records epoch 1" test "$(sql "$(num "$L")" "SELECT epoch FROM meridian_fencing")" = "1"

leaders_by_metrics() {
  for n in $NODES; do curl -sf "http://127.0.0.1:$(mport_of "$(num "$n")")/metrics"; done |
    grep -c '^meridian_keeper_leader{.*} 1$'
}
check "keeper metrics: exactly one node reports holding the leader key" test "$(leaders_by_metrics)" = "1"
curl -sf "http://127.0.0.1:$(mport_of "$(num "$L")")/metrics" > "$lab/metrics.txt"
if command -v promtool >/dev/null; then
  check "keeper /metrics passes promtool check metrics" promtool check metrics < "$lab/metrics.txt"
fi

# Workload: one row per insert, sent to whoever etcd names; a row is
# acknowledged when the INSERT returned (synchronous commit, ANY 1).
workload() {
  local i=0 l
  while :; do
    i=$((i + 1))
    l=$(leader_node)
    started=$(date +%s.%N)
    if [ -n "$l" ] && timeout 5 "$PSQL" -h 127.0.0.1 -p "$(port_of "$(num "$l")")" -U postgres -d meridian \
         -XtAq -v ON_ERROR_STOP=1 -c "INSERT INTO bank VALUES ($i, '$l')" >/dev/null 2>&1; then
      echo "$i $(date +%s.%N) $started" >> "$lab/acked"
    fi
  done
}
: > "$lab/acked"
workload &
workload_pid=$!
sleep 3

acked_all_present() {
  local l want have n
  for _ in 1 2 3 4 5; do l=$(leader_node); [ -n "$l" ] && break; sleep 0.5; done
  # One snapshot of the file: the workload keeps appending to it.
  cut -d' ' -f1 "$lab/acked" | sort -n | uniq > "$lab/acked.snapshot"
  want=$(tr '\n' ',' < "$lab/acked.snapshot" | sed 's/,$//')
  n=$(wc -l < "$lab/acked.snapshot")
  [ -n "$want" ] || { echo "# no acknowledged rows"; return 1; }
  have=$(sql "$(num "$l")" "SELECT count(*) FROM bank WHERE id IN ($want)")
  [ "$have" = "$n" ] && return 0
  echo "# leader '$l' holds $have of $n acknowledged rows; missing:" \
    "$(sql "$(num "$l")" "SELECT string_agg(a::text, ',') FROM unnest(ARRAY[$want]) a WHERE a NOT IN (SELECT id FROM bank)")"
  return 1
}

# ---- Fault 1: kill -9 of the primary's whole node.
old=$L
t0=$(date +%s.%N)
cellsh kill-node "$old"
t_dead=$(date +%s.%N) # cell.sh returned: the node is gone (on a loaded machine, a while after t0)
recovered=
for _ in $(seq 1 $((RTO_MAX_S * 10))); do
  # The first write *sent* after the node was gone and acknowledged (one
  # sent between t0 and the kill may still be acknowledged by the old one).
  last=$(tail -1 "$lab/acked")
  if [ -n "$last" ] && [ "$(echo "$(echo "$last" | cut -d' ' -f3) > $t_dead" | bc)" = 1 ]; then
    recovered=$(echo "$last" | cut -d' ' -f2); break
  fi
  sleep 0.1
done
if [ -n "$recovered" ]; then
  ok "writes acknowledged again $(echo "$recovered - $t0" | bc | cut -c1-5) s after the primary node was killed (bound ${RTO_MAX_S} s)"
else
  not_ok "writes acknowledged again within ${RTO_MAX_S} s of killing the primary node"
fi
new=$(leader_node)
check "a different node leads after the kill ($old -> $new)" test -n "$new" -a "$new" != "$old"
check "epoch bumped to 2" test "$(epoch)" = "2"
check "the new primary recorded epoch 2 in the database" test "$(sql "$(num "$new")" "SELECT epoch FROM meridian_fencing")" = "2"
check "every acknowledged row is on the new primary" acked_all_present

# ---- The old primary comes back: pg_rewind, standby of the new one.
cellsh start-node "$old"
check "old primary rejoins as a synchronous standby" wait_healthy 2 60
check "the rejoined node is in recovery" test "$(sql "$(num "$old")" "SELECT pg_is_in_recovery()")" = "t"

# ---- Fault 2: SIGSTOP of the primary's whole node for twice the TTL.
P=$(leader_node)
pn=$(num "$P")
acked_before=$(wc -l < "$lab/acked")
cellsh pause-node "$P"
sleep $((2 * LEASE_TTL_S))
cellsh resume-node "$P"
sleep 2
r=$(sql "$pn" "SELECT pg_is_in_recovery()")
check "after SIGCONT the paused old primary is not writable (answer: '${r:-down}')" test "$r" != "f"
now=$(leader_node)
check "a different node leads after the pause ($P -> $now)" test -n "$now" -a "$now" != "$P"
check "epoch bumped to 3" test "$(epoch)" = "3"
check "writes continued after the pause" test "$(wc -l < "$lab/acked")" -gt "$acked_before"
check "paused node rejoins as a standby, cell healthy" wait_healthy 2 60

# ---- Planned switchover to a synchronous standby: zero loss, short pause.
S=$(leader_node)
T=""
for n in $NODES; do [ "$n" != "$S" ] && T=$n && break; done
lease=$(bash "$src/scripts/etcd.sh" ctl "$cell/etcd" lease grant 30 | awk '{print $2}')
t0=$(date +%s.%N)
bash "$src/scripts/etcd.sh" ctl "$cell/etcd" put --lease="$lease" /meridian/itest/switchover "{\"to\":\"$T\"}" >/dev/null
switched=
for _ in $(seq 1 100); do [ "$(leader_node)" = "$T" ] && switched=$(date +%s.%N) && break; sleep 0.1; done
if [ -n "$switched" ]; then
  ok "switchover $S -> $T: new leader after $(echo "$switched - $t0" | bc | cut -c1-5) s (well under the lease TTL)"
else
  not_ok "switchover $S -> $T within 10 s"
fi
check "switchover bumped the epoch to 4" test "$(epoch)" = "4"
check "switchover recorded in history" bash -c "bash '$src/scripts/etcd.sh' ctl '$cell/etcd' get --print-value-only /meridian/itest/history/00000000000000000004 | grep -q '\"kind\":\"switchover\"'"
consumed() { for _ in $(seq 1 20); do [ -z "$(etcd_get switchover)" ] && return 0; sleep 0.5; done; return 1; }
check "the new leader consumed the switchover request" consumed
check "cell healthy after the switchover, old leader a standby" wait_healthy 2 60
check "every acknowledged row present after the switchover" acked_all_present

# ---- kill -9 of the primary's postmaster only: the keeper restarts it
# (or the cell fails over); nothing acknowledged is lost.
D=$(leader_node)
cellsh kill-db "$D"
check "cell healthy again after the postmaster was killed" wait_healthy 2 60
check "every acknowledged row present after the postmaster kill" acked_all_present

# ---- A synchronous standby goes down, then the primary dies: only the
# standby that holds every acknowledged commit may be promoted.
P=$(leader_node)
down=""; keep=""
for n in $NODES; do
  [ "$n" = "$P" ] && continue
  if [ -z "$down" ]; then down=$n; else keep=$n; fi
done
cellsh stop-node "$down"
shrunk=
for _ in $(seq 1 60); do [ "$(syncset_size)" = "1" ] && shrunk=1 && break; sleep 0.5; done
check "the primary shrinks the synchronous set to the live standby ($keep)" test -n "$shrunk"
cellsh kill-node "$P"
promoted=
for _ in $(seq 1 100); do [ "$(leader_node)" = "$keep" ] && promoted=1 && break; sleep 0.2; done
check "the standby in the synchronous set ($keep) is promoted" test -n "$promoted"
sleep 1
cellsh start-node "$down"
cellsh start-node "$P"
check "both nodes come back: cell healthy" wait_healthy 2 90

# ---- The primary cut off from etcd (its keeper's etcd links black-holed
# in meridian-netem; its standbys still reach etcd and it): it must fence
# itself before its lease can expire, and a standby takes over.
I=$(leader_node)
e_before=$(epoch)
t0=$(date +%s.%N)
cellsh isolate "$I"
newl=
for _ in $(seq 1 150); do l=$(leader_node); [ -n "$l" ] && [ "$l" != "$I" ] && newl=$l && break; sleep 0.1; done
t_new=$(date +%s.%N)
check "primary cut off from etcd: $newl leads after $(echo "$t_new - $t0" | bc | cut -c1-5) s" test -n "$newl"
fence_line=$(grep -h "fencing PostgreSQL now" "$cell/$I.keeper.log" | tail -1 | sed -n 's/^ts=\([^ ]*\).*/\1/p')
check "the isolated primary fenced itself (keeper log)" test -n "$fence_line"
r=$(sql "$(num "$I")" "SELECT pg_is_in_recovery()")
check "the isolated old primary is not writable (answer: '${r:-down}')" test "$r" != "f"
check "epoch bumped after the isolation" test "$(epoch)" -gt "$e_before"
check "every acknowledged row present after the isolation" acked_all_present
cellsh heal "$I"
check "healed: the old primary rejoins, cell healthy" wait_healthy 2 90
rw=$(bash "$src/scripts/etcd.sh" ctl "$cell/etcd" get --prefix --print-value-only /meridian/itest/rewinds/ | grep "\"node\":\"$I\"" | tail -1)
check "the rejoin reported what pg_rewind discarded (${rw:-none})" \
  bash -c 'jq -e "has(\"diverged_at\") and has(\"discarded_bytes\")" <<<"$1" >/dev/null' _ "$rw"

kill "$workload_pid" 2>/dev/null
wait "$workload_pid" 2>/dev/null
workload_pid=
check "every acknowledged row present exactly once at the end" acked_all_present
dups=$(sql "$(num "$(leader_node)")" "SELECT count(*) - count(DISTINCT id) FROM bank")
check "no row doubled" test "$dups" = "0"
check "exactly one writable node" test "$(for n in 1 2 3; do sql "$n" "SELECT pg_is_in_recovery()"; done | grep -c '^f$')" = "1"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
