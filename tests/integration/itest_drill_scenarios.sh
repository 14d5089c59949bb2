#!/usr/bin/env bash
# itest_drill_scenarios.sh — the lab drills db-failure and
# etcd-majority-loss end to end (issue 4 item 10; docs/DRILLS.md "Lab
# drills"), each on a two-region lab of its own with the bank workload on
# cell us through the global entry.
#   db-failure (requirements scenario 2): the leader's node is killed —
#     an in-region failover to a synchronous standby, nothing lost — then
#     every remaining us-east node of cell us: the DR standby us-dr1 takes
#     the cell, the loss within the cell's bound.
#   etcd-majority-loss: two of the three etcd members are frozen — no
#     transfer sent after the lease ran out may be acknowledged (nobody may
#     hold the cell) — then they come back: writes resume in us-east and
#     nothing acknowledged is lost.
# About 2-3 minutes per drill on 2 cores; ITEST_DRILL_ETCD=0 skips the
# second.
#
# Env: MERIDIAN_BIN_DIR (build directory), MERIDIAN_SOURCE_DIR (source
# tree). Prints "ok"/"not ok" lines and "N passed, M failed"; exits 1 on
# any failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
export MERIDIAN_SOURCE_DIR=${MERIDIAN_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${MERIDIAN_BIN_DIR:?MERIDIAN_BIN_DIR must name the build directory}
ctl="$bin/meridianctl"

# shellcheck disable=SC1091
. "$here/tap.sh"
lt() { awk -v v="$1" -v m="$2" 'BEGIN { exit !(v != "null" && v != "" && v + 0 < m + 0) }'; }

work=$(mktemp -d /tmp/meridian-itest-drill-scenarios-XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

drill() { # SCENARIO: run it, leave the report's last line in $rep
  local t rc
  t=$(date +%s)
  "$ctl" --json drill "$1" --clients 4 --report "$work/$1.html" >"$work/$1.out" 2>"$work/$1.err"
  rc=$?
  echo "# $1 drill took $(( $(date +%s) - t )) s, exit $rc"
  sed 's/^/# /' "$work/$1.out" | grep -v '^# {' | head -12
  check "drill $1 exits 0 (rc $rc)" test "$rc" -eq 0
  [ "$rc" -eq 0 ] || grep -v 'comp=etcd' "$work/$1.err" | tail -30 | sed 's/^/# /'
  rep=$(tail -n 1 "$work/$1.out")
}
j() { jq -r "$1" <<<"$rep" 2>/dev/null; }

# ---- db-failure: in-region fallback, then DR
drill db-failure
check "db-failure: pass == true" test "$(j .pass)" = true
check "db-failure: phases node-kill (home) then db-loss us us-east (dr)" \
  test "$(j '[.details[0].phases[] | (.fault | split(" ")[0]) + "/" + .expect] | join(",")')" = "node-kill/home,db-loss/dr"
check "db-failure: phase 1 stays in us-east on another node ($(j '.details[0].phases[0] | .leader_before + " -> " + .leader_after'))" \
  test "$(j '.details[0].phases[0] | (.region_after == "us-east" and .leader_after != .leader_before)')" = true
check "db-failure: phase 1 writes back within 60 s ($(j '.details[0].phases[0].rto_s') s)" \
  lt "$(j '.details[0].phases[0].rto_s')" 60
check "db-failure: phase 2 moves the cell to us-dr1 in eu-west" \
  test "$(j '.details[0].phases[1] | .leader_after + " " + .region_after')" = "us-dr1 eu-west"
check "db-failure: phase 2 writes back within 120 s ($(j '.details[0].phases[1].rto_s') s; headline region_rto_s $(j .region_rto_s))" \
  lt "$(j '.details[0].phases[1].rto_s')" 120
check "db-failure: history kind regional_failover" test "$(j .region_failover_kind)" = regional_failover
check "db-failure: doubled 0, invariant_violations 0, stale_primary_acks 0" \
  test "$(j '[.doubled, .invariant_violations, .details[0].stale_primary_acks] | map(tostring) | join(" ")')" = "0 0 0"
check "db-failure: loss $(j .region_loss_s) s within the bound $(j .region_loss_bound_s) s" \
  awk -v v="$(j .region_loss_s)" -v b="$(j .region_loss_bound_s)" 'BEGIN { exit !(v != "null" && v + 0 <= b + 0) }'
check "db-failure: the HTML report beside the JSON" grep -q 'db-loss' "$work/db-failure.html"

# ---- etcd-majority-loss: fenced, then back
if [ "${ITEST_DRILL_ETCD:-1}" = 1 ]; then
  drill etcd-majority-loss
  check "etcd-majority-loss: pass == true" test "$(j .pass)" = true
  check "etcd-majority-loss: phases etcd-majority-loss us-east (fenced), heal (home)" \
    test "$(j '[.details[0].phases[] | .fault + "/" + .expect] | join(",")')" = "etcd-majority-loss us-east/fenced,heal/home"
  check "etcd-majority-loss: 0 transfers acknowledged while etcd had no majority" \
    test "$(j '.details[0].phases[0].acked_while_fenced')" = 0
  check "etcd-majority-loss: writes stopped within two 6 s leases ($(j '.details[0].phases[0].writes_stopped_s') s after the fault)" \
    lt "$(j '.details[0].phases[0].writes_stopped_s')" 12
  check "etcd-majority-loss: writes back in us-east after the heal ($(j '.details[0].phases[1].rto_s') s, leader $(j '.details[0].phases[1].leader_after'))" \
    test "$(j '.details[0].phases[1] | (.region_after == "us-east" and .rto_s != null and .rto_s < 120)')" = true
  check "etcd-majority-loss: 0 lost, 0 doubled, 0 violations" \
    test "$(j '[.acked_lost, .doubled, .invariant_violations] | map(tostring) | join(" ")')" = "0 0 0"
else
  echo "# etcd-majority-loss skipped (ITEST_DRILL_ETCD=0)"
fi
finish
