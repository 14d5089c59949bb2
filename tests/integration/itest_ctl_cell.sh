#!/usr/bin/env bash
# itest_ctl_cell.sh — meridianctl's cell commands (status, history,
# switchover, keeper fsm) against a real cell: 3 etcd members and three
# PostgreSQL nodes run by meridian-keepers.
#
# The cell is started with scripts/cell.sh. What meridianctl shows
# is checked against etcd itself (etcdctl) and PostgreSQL, not against
# meridianctl's own output. Asserts: status (3 nodes, one primary = the
# leader key's node, epoch 1, synchronous set of 2, exit 0), keeper fsm
# --dot, failover after the primary node is killed (new leader, epoch 2,
# every status exit code consistent with its leader field: 0 with a
# leader, 3 without), history (bootstrap + failover, right nodes),
# switchover refusals (unknown node, the current leader, a dead node,
# etcd unreachable, bad arguments) and, once the keeper implements it
# (src/keeper/keeper.c mentions "switchover"), a real switchover.
# Everything started here is stopped by PID.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${MERIDIAN_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${MERIDIAN_BIN_DIR:?MERIDIAN_BIN_DIR must name the build directory}
ctl="$bin/meridianctl"
PSQL=/usr/lib/postgresql/15/bin/psql

# shellcheck disable=SC1091
. "$here/tap.sh"

lab=$(mktemp -d /tmp/meridian-itest-ctl-XXXXXX)
chmod 755 "$lab"
CELL=itest-ctl
EP=
NODES=
cell_sh() { bash "$src/scripts/cell.sh" "$@" >>"$lab/cell.log" 2>&1; }
cell_up() {
  cell_sh up "$lab/cell" --name "$CELL" --meridiand 0 --build "$bin" || return 1
  # shellcheck disable=SC1091
  . "$lab/cell/env"
  EP=$ETCD_ENDPOINTS
}
cleanup() {
  cell_sh down "$lab/cell"
  if [ "$failed" -eq 0 ]; then rm -rf "$lab"; else echo "# logs kept in $lab"; fi
}
trap cleanup EXIT

# etcd as the keepers wrote it, read without meridianctl.
etcd_get() {
  ETCDCTL_API=3 etcdctl --endpoints "$EP" --dial-timeout 2s --command-timeout 3s \
    get --print-value-only "/meridian/$CELL/$1" 2>/dev/null
}
leader_key_node() { etcd_get leader | jq -r '.node // empty' 2>/dev/null; }

# status --json into $st and its exit code into $st_rc.
st= st_rc=
status_json() { st=$("$ctl" status --etcd "$EP" --cell "$CELL" --json 2>"$lab/status.err"); st_rc=$?; }
jqs() { jq -e "$1" <<<"$st" >/dev/null 2>&1; }
jq_ok() { jq -e "$1" >/dev/null 2>&1; } # on stdin

# Healthy: a leader, n_nodes present, want_streaming standbys streaming,
# a synchronous set of want_sync.
wait_status() {
  local want_nodes=$1 want_streaming=$2 want_sync=$3 limit_s=$4
  for _ in $(seq 1 $((limit_s * 2))); do
    status_json
    if [ "$st_rc" = 0 ] && jqs "(.leader != null) and ([.nodes[] | select(.present)] | length) == $want_nodes
        and ([.nodes[] | select(.streaming == true)] | length) >= $want_streaming
        and (.synchronous_set | length) == $want_sync"; then
      return 0
    fi
    sleep 0.5
  done
  echo "# last status (exit $st_rc): $st"
  return 1
}

if ! cell_up; then
  not_ok "cell starts"
  tail -20 "$lab/cell.log"
  echo "$passed passed, $failed failed"
  exit 1
fi
ok "cell starts (etcd $EP)"

# ---- keeper fsm (no cell needed, but cheap).
out=$("$ctl" keeper fsm --dot 2>&1)
check "keeper fsm --dot prints a Graphviz digraph" grep -q "^digraph" <<<"$out"
check "keeper fsm --dot has a standby -> promoting edge" grep -q "standby -> promoting" <<<"$out"
out=$("$ctl" keeper fsm 2>&1)
check "keeper fsm prints the table with its reasons" grep -q "most advanced of the synchronous set" <<<"$out"

# ---- status on a healthy cell.
check "cell healthy per status: leader, 3 nodes, 2 streaming, sync set of 2 (90 s)" wait_status 3 2 2 90
L=$(leader_key_node)
check "status exit code 0 with a leader" test "$st_rc" = 0
check "status shows 3 nodes n1..n3" jqs '[.nodes[].node] == ["n1","n2","n3"]'
check "exactly one node is primary" jqs '[.nodes[] | select(.primary == true)] | length == 1'
check "the primary is the leader key's node ($L)" jqs "([.nodes[] | select(.primary == true)][0].node == \"$L\") and .leader.node == \"$L\""
check "the leader's role is 'leader', the others 'standby'" jqs "[.nodes[] | .role] | sort == [\"leader\",\"standby\",\"standby\"]"
check "epoch 1 (etcd says $(etcd_get epoch))" jqs '.epoch == 1 and .leader.epoch == 1'
check "epoch matches etcd's epoch key" test "$(jq -r .epoch <<<"$st")" = "$(etcd_get epoch)"
check "synchronous set of 2, both standbys" jqs "(.synchronous_set | length) == 2 and (.synchronous_set | index(\"$L\")) == null"
check "lease time left is known and within the TTL" jqs '.leader.lease_ttl_s >= 0 and .leader.lease_ttl_s <= 60'
check "standbys stream from the leader" jqs "[.nodes[] | select(.role == \"standby\") | .upstream] == [\"$L\",\"$L\"]"
check "LSNs shown as X/Y and lag in bytes" jqs '[.nodes[] | (.flush_lsn | test("^[0-9A-F]+/[0-9A-F]+$")) and (.lag_bytes | type) == "number"] | all'
check "zones and region published" jqs '[.nodes[].zone] == ["az1","az2","az3"] and ([.nodes[].region] | unique) == ["us-east"]'
check "no no_leader section while a leader exists" jqs '.no_leader == null'
txt=$("$ctl" status --etcd "$EP" --cell "$CELL" 2>&1)
check "human status names the leader and the sync set" \
  bash -c 'grep -q "^leader *'"$L"'" <<<"$1" && grep -q "^sync set" <<<"$1" && grep -q "FLUSH_LSN" <<<"$1"' _ "$txt"

# ---- Errors.
"$ctl" status --etcd http://127.0.0.1:1 --cell "$CELL" >/dev/null 2>"$lab/err"; rc=$?
check "etcd unreachable: exit 1 and the message says so" \
  bash -c '[ "$1" = 1 ] && grep -q "cannot reach etcd at http://127.0.0.1:1" "$2" && grep -q "is the cell running" "$2"' _ "$rc" "$lab/err"
"$ctl" status --cell "$CELL" >/dev/null 2>"$lab/err"; rc=$?
check "no etcd endpoints: usage error (exit 2)" test "$rc" = 2
"$ctl" status --etcd "$EP" --cell "Bad/Name" >/dev/null 2>&1; rc=$?
check "bad cell name: usage error (exit 2)" test "$rc" = 2
"$ctl" switchover --etcd "$EP" --cell "$CELL" >/dev/null 2>"$lab/err"; rc=$?
check "switchover without --to: exit 2" test "$rc" = 2
"$ctl" switchover --etcd "$EP" --cell "$CELL" --to n2 --timeout-s 0 >/dev/null 2>&1; rc=$?
check "switchover --timeout-s 0: exit 2" test "$rc" = 2
"$ctl" switchover --etcd "$EP" --cell "$CELL" --to n9 >/dev/null 2>"$lab/err"; rc=$?
check "switchover to an unknown node: refused ($(head -1 "$lab/err"))" \
  bash -c '[ "$1" -ne 0 ] && grep -q "unknown node n9" "$2"' _ "$rc" "$lab/err"
"$ctl" switchover --etcd "$EP" --cell "$CELL" --to "$L" >/dev/null 2>"$lab/err"; rc=$?
check "switchover to the current leader: refused ($(head -1 "$lab/err"))" \
  bash -c '[ "$1" -ne 0 ] && grep -q "already the leader" "$2"' _ "$rc" "$lab/err"
check "the refusals left no switchover request behind" test -z "$(etcd_get switchover)"
check "the refusals changed nothing (epoch 1, same leader)" \
  test "$(etcd_get epoch)/$(leader_key_node)" = "1/$L"

# A pending request (made here with etcdctl, to a node no keeper acts
# on) makes a second one fail: create-if-absent.
lease=$(ETCDCTL_API=3 etcdctl --endpoints "$EP" lease grant 30 2>/dev/null | awk '{print $2}')
ETCDCTL_API=3 etcdctl --endpoints "$EP" put --lease="$lease" "/meridian/$CELL/switchover" \
  '{"to":"n9","requested_at_ms":1}' >/dev/null 2>&1
S=$(jq -r '.synchronous_set[0]' <<<"$st")
"$ctl" switchover --etcd "$EP" --cell "$CELL" --to "$S" >/dev/null 2>"$lab/err"; rc=$?
check "a second switchover request is refused ($(head -1 "$lab/err"))" \
  bash -c '[ "$1" = 1 ] && grep -q "a switchover is already in progress in cell .* (to n9)" "$2"' _ "$rc" "$lab/err"
check "the pending request was left as it was" \
  test "$(etcd_get switchover | jq -r .to 2>/dev/null)" = n9
ETCDCTL_API=3 etcdctl --endpoints "$EP" lease revoke "$lease" >/dev/null 2>&1
check "still epoch 1 and the same leader" test "$(etcd_get epoch)/$(leader_key_node)" = "1/$L"

# ---- Failover: kill the primary's whole node.
old=$L
cell_sh kill-node "$lab/cell" "$old"
saw_no_leader=0
consistent=1
new=
for _ in $(seq 1 120); do
  status_json
  if jqs '.leader == null'; then
    saw_no_leader=1
    [ "$st_rc" = 3 ] || { consistent=0; echo "# status without a leader exited $st_rc"; }
    jqs '.no_leader.message == "no leader: failover in progress or not possible"' ||
      { consistent=0; echo "# no_leader section missing: $st"; }
  elif jqs '.leader != null'; then
    [ "$st_rc" = 0 ] || { consistent=0; echo "# status with a leader exited $st_rc"; }
    n=$(jq -r .leader.node <<<"$st")
    if [ "$n" != "$old" ] && jqs '.epoch == 2'; then new=$n; break; fi
  fi
  sleep 0.25
done
check "after killing $old, status shows a new leader at epoch 2 (30 s): ${new:-none}" \
  test -n "$new" -a "$new" != "$old"
check "the new leader is the leader key's node" test "$new" = "$(leader_key_node)"
check "every status exit code matched its leader field (0 with, 3 without)" test "$consistent" = 1
if [ "$saw_no_leader" = 1 ]; then
  ok "status was caught without a leader during the failover and said why"
else
  echo "# (the leaderless window was not sampled; exit-code 3 not observed)"
fi
status_json
# The dead node has no member key; it is listed (as unreachable) only
# while it is still in the synchronous set or was the last leader.
check "the killed node is not shown as present" \
  jqs "[.nodes[] | select(.node == \"$old\" and .present)] | length == 0"
"$ctl" switchover --etcd "$EP" --cell "$CELL" --to "$old" >/dev/null 2>"$lab/err"; rc=$?
check "switchover to the dead node: refused ($(head -1 "$lab/err"))" \
  bash -c '[ "$1" -ne 0 ] && grep -Eq "unreachable|unknown node" "$2"' _ "$rc" "$lab/err"

# ---- history.
hist=$("$ctl" history --etcd "$EP" --cell "$CELL" --json 2>"$lab/err"); rc=$?
check "history exit 0" test "$rc" = 0
check "history has 2 events: bootstrap by $old, failover by $new" \
  jq_ok "[.events[] | [.epoch, .kind, .node]] == [[1, \"bootstrap\", \"$old\"], [2, \"failover\", \"$new\"]]" <<<"$hist"
check "the failover's detection time is known and below 30 s" \
  jq_ok '.events[1].detection_ms >= 0 and .events[1].detection_ms < 30000' <<<"$hist"
check "history times are ISO-8601 UTC" \
  jq_ok '[.events[].acquired_at | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$")] | all' <<<"$hist"
txt=$("$ctl" history --etcd "$EP" --cell "$CELL" 2>&1)
check "human history lists both events" bash -c 'grep -q "bootstrap" <<<"$1" && grep -q "failover" <<<"$1"' _ "$txt"

# ---- The killed node comes back.
cell_sh start-node "$lab/cell" "$old"
check "the killed node rejoins: 3 nodes, 2 streaming, sync set of 2 (90 s)" wait_status 3 2 2 90
check "it rejoined as a standby of $new" \
  jqs ".nodes[] | select(.node == \"$old\") | .role == \"standby\" and .upstream == \"$new\""

# ---- The config file: etcd and cell from FILE instead of flags.
if grep -q '"etcd"' "$src/src/cli/cli_config.c"; then
  out=$("$ctl" --config "$CONFIG" status --json 2>"$lab/err"); rc=$?
  check "status --config FILE (etcd and cell from the file) exits 0 ($(head -1 "$lab/err"))" \
    bash -c '[ "$1" = 0 ] && jq -e ".cell == \"$2\" and .leader.node == \"$3\"" <<<"$4" >/dev/null' _ "$rc" "$CELL" "$new" "$out"
else
  echo "# etcd/cell from the config file not tested (no etcd key in cli_config.c)"
fi

# ---- A real switchover, once the keeper implements it.
if grep -q switchover "$src/src/keeper/keeper.c"; then
  status_json
  target=$(jq -r "[.nodes[] | select(.role == \"standby\" and .streaming == true and .synchronous == true)][0].node // empty" <<<"$st")
  if [ -z "$target" ]; then
    not_ok "a streaming synchronous standby to switch over to; status: $st"
  else
    sw=$("$ctl" switchover --etcd "$EP" --cell "$CELL" --to "$target" --timeout-s 60 --json 2>"$lab/err"); rc=$?
    check "switchover to $target exits 0 ($(head -1 "$lab/err"))" test "$rc" = 0
    check "switchover reports epoch 3 and a write pause" \
      jq_ok ".ok == true and .to == \"$target\" and .epoch == 3 and .write_pause_ms >= 0" <<<"$sw"
    echo "# switchover: $sw"
    check "the leader key names $target at epoch 3" test "$(leader_key_node)/$(etcd_get epoch)" = "$target/3"
    check "history's last event is the switchover to $target" \
      bash -c '"$1" history --etcd "$2" --cell "$3" --json | jq -e "(.events | length) == 3 and .events[2].kind == \"switchover\" and .events[2].node == \"$4\"" >/dev/null' \
      _ "$ctl" "$EP" "$CELL" "$target"
    # The key is taken before PostgreSQL is promoted: wait (bounded)
    # for the promotion, and never see two writable nodes meanwhile.
    most=0
    for _ in $(seq 1 30); do
      writable=0
      for node in $NODES; do
        port=$(etcd_get "members/$node" | jq -r '.port // empty' 2>/dev/null)
        [ -n "$port" ] || continue
        r=$("$PSQL" -h 127.0.0.1 -p "$port" -U postgres -d postgres -XtAq -c "SELECT pg_is_in_recovery()" 2>/dev/null)
        [ "$r" = f ] && writable=$((writable + 1))
      done
      [ "$writable" -gt "$most" ] && most=$writable
      [ "$writable" = 1 ] && break
      sleep 0.5
    done
    check "exactly one writable PostgreSQL after the switchover (now $writable, at most $most seen)" \
      test "$writable" = 1 -a "$most" = 1
    # Member keys are republished every keeper loop: allow a few.
    for _ in $(seq 1 30); do
      status_json
      jqs "[.nodes[] | select(.primary == true) | .node] == [\"$target\"]" && break
      sleep 0.5
    done
    check "status agrees: $target is the only primary (15 s)" \
      jqs "[.nodes[] | select(.primary == true) | .node] == [\"$target\"]"
    check "the old leader $new rejoins as a standby of $target (90 s)" wait_status 3 2 2 90
  fi
else
  echo "# src/keeper/keeper.c has no switchover yet: real switchover not tested"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
