#!/usr/bin/env bash
# itest_keeper.sh — in-region failover on real servers: a 3-member etcd
# cluster, three PostgreSQL nodes each run by a meridian-keeper, and a
# write workload that records every acknowledged (synchronously
# committed) row. Faults: kill -9 of the primary's whole node (keeper and
# postmaster), the old primary coming back (pg_rewind), SIGSTOP of the
# primary's whole node for twice the lease TTL, then SIGCONT.
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

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }

lab=$(mktemp -d /tmp/meridian-itest-keeper-XXXXXX)
chmod 755 "$lab"
workload_pid=
cleanup() {
  [ -n "$workload_pid" ] && kill "$workload_pid" 2>/dev/null && wait "$workload_pid" 2>/dev/null
  for n in 1 2 3; do
    [ -f "$lab/k$n.pid" ] && kill -CONT "$(cat "$lab/k$n.pid")" 2>/dev/null
    [ -f "$lab/k$n.pid" ] && kill "$(cat "$lab/k$n.pid")" 2>/dev/null
  done
  sleep 2
  for n in 1 2 3; do bash "$src/scripts/pg.sh" stop "$lab/n$n" >/dev/null 2>&1; done
  bash "$src/scripts/etcd.sh" stop "$lab/etcd" >/dev/null 2>&1
  if [ "$failed" -eq 0 ]; then rm -rf "$lab"; else echo "# logs kept in $lab"; fi
}
trap cleanup EXIT

# Ports below the ephemeral range, distinct per node.
base=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
port_of() { echo $((base + $1)); }
for n in 1 2 3; do
  while ss -ltnH "sport = :$(port_of $n)" | grep -q .; do base=$((base + 7)); done
done

bash "$src/scripts/etcd.sh" init "$lab/etcd" 3 >/dev/null
bash "$src/scripts/etcd.sh" start "$lab/etcd" >/dev/null || { not_ok "etcd cluster starts"; echo "0 passed, 1 failed"; exit 1; }
EP=$(bash "$src/scripts/etcd.sh" endpoints "$lab/etcd")

start_keeper() {
  local n=$1
  "$bin/meridian-keeper" --node "n$n" --cell itest --etcd "$EP" --dir "$lab/n$n" \
    --pg-port "$(port_of "$n")" --zone "az$n" --region us-east \
    --pid-file "$lab/k$n.pid" >>"$lab/k$n.log" 2>&1 &
  for _ in $(seq 1 50); do [ -s "$lab/k$n.pid" ] && return 0; sleep 0.1; done
  return 1
}

etcd_get() { bash "$src/scripts/etcd.sh" ctl "$lab/etcd" get --print-value-only "/meridian/itest/$1" 2>/dev/null; }
leader_node() { etcd_get leader | sed -n 's/.*"node":"\([^"]*\)".*/\1/p'; }
epoch() { etcd_get epoch; }
sql() { local n=$1; shift; "$PSQL" -h 127.0.0.1 -p "$(port_of "$n")" -U postgres -d meridian -XtAq -v ON_ERROR_STOP=1 -c "$@" 2>/dev/null; }
num() { echo "${1#n}"; }

# Wait (bounded) until the cell has a writable leader with n_standbys
# synchronous standbys streaming from it.
wait_healthy() {
  local want=$1 limit=$2 l
  for _ in $(seq 1 $((limit * 2))); do
    l=$(leader_node)
    if [ -n "$l" ] && [ "$(sql "$(num "$l")" "SELECT pg_is_in_recovery()")" = "f" ] &&
       [ "$(sql "$(num "$l")" "SELECT count(*) FROM pg_stat_replication WHERE state='streaming' AND sync_state='quorum'")" = "$want" ]; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

for n in 1 2 3; do start_keeper "$n"; done
check "cell bootstraps: one primary, two synchronous standbys streaming (60 s)" wait_healthy 2 60
check "epoch is 1 after bootstrap" test "$(epoch)" = "1"
L=$(leader_node)
sql "$(num "$L")" "CREATE TABLE bank (id int PRIMARY KEY, node text NOT NULL)" >/dev/null
check "meridian_fencing records epoch 1" test "$(sql "$(num "$L")" "SELECT epoch FROM meridian_fencing")" = "1"

# Workload: one row per insert, sent to whoever etcd names; a row is
# acknowledged when the INSERT returned (synchronous commit, ANY 1).
workload() {
  local i=0 l
  while :; do
    i=$((i + 1))
    l=$(leader_node)
    if [ -n "$l" ] && timeout 5 "$PSQL" -h 127.0.0.1 -p "$(port_of "$(num "$l")")" -U postgres -d meridian \
         -XtAq -v ON_ERROR_STOP=1 -c "INSERT INTO bank VALUES ($i, '$l')" >/dev/null 2>&1; then
      echo "$i $(date +%s.%N)" >> "$lab/acked"
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
  want=$(cut -d' ' -f1 "$lab/acked" | sort -n | uniq | tr '\n' ',' | sed 's/,$//')
  n=$(cut -d' ' -f1 "$lab/acked" | sort -n | uniq | wc -l)
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
kill -9 "$(cat "$lab/k$(num "$old").pid")" "$(head -1 "$lab/n$(num "$old")/data/postmaster.pid")"
rm -f "$lab/k$(num "$old").pid"
recovered=
for _ in $(seq 1 $((RTO_MAX_S * 10))); do
  last=$(tail -1 "$lab/acked" | cut -d' ' -f2)
  if [ -n "$last" ] && [ "$(echo "$last > $t0" | bc)" = 1 ]; then recovered=$last; break; fi
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
start_keeper "$(num "$old")"
check "old primary rejoins as a synchronous standby (60 s)" wait_healthy 2 60
check "the rejoined node is in recovery" test "$(sql "$(num "$old")" "SELECT pg_is_in_recovery()")" = "t"

# ---- Fault 2: SIGSTOP of the primary's whole node for twice the TTL.
P=$(leader_node)
pn=$(num "$P")
pm=$(head -1 "$lab/n$pn/data/postmaster.pid")
pids="$(cat "$lab/k$pn.pid") $pm $(pgrep -P "$pm" | tr '\n' ' ')"
acked_before=$(wc -l < "$lab/acked")
kill -STOP $pids
sleep 6
kill -CONT $pids
sleep 2
r=$(sql "$pn" "SELECT pg_is_in_recovery()")
check "after SIGCONT the paused old primary is not writable (answer: '${r:-down}')" test "$r" != "f"
now=$(leader_node)
check "a different node leads after the pause ($P -> $now)" test -n "$now" -a "$now" != "$P"
check "epoch bumped to 3" test "$(epoch)" = "3"
check "writes continued after the pause" test "$(wc -l < "$lab/acked")" -gt "$acked_before"
check "paused node rejoins as a standby, cell healthy (60 s)" wait_healthy 2 60

kill "$workload_pid" 2>/dev/null
wait "$workload_pid" 2>/dev/null
workload_pid=
check "every acknowledged row present exactly once at the end" acked_all_present
dups=$(sql "$(num "$(leader_node)")" "SELECT count(*) - count(DISTINCT id) FROM bank")
check "no row doubled" test "$dups" = "0"
check "exactly one writable node" test "$(for n in 1 2 3; do sql "$n" "SELECT pg_is_in_recovery()"; done | grep -c '^f$')" = "1"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
