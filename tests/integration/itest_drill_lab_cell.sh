#!/usr/bin/env bash
# itest_drill_lab_cell.sh — the cell drills node-loss and db-crash run on
# the two-region lab (`meridianctl drill node-loss --lab`, `drill db-crash
# --lab`; docs/DRILLS.md "Lab drills"): the bank workload on cell us
# through the global entry, the fault on cell us's leader, an in-region
# recovery (a synchronous standby takes over, or for db-crash the keeper
# restarts PostgreSQL in place). Asserts from each JSON report: pass,
# nothing lost, doubled or broken, writes back within 60 s, the leader in
# us-east. About 2 minutes per drill on 2 cores.
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

work=$(mktemp -d /tmp/meridian-itest-drill-lab-cell-XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
j() { jq -r "$1" <<<"$rep" 2>/dev/null; }

for scenario in node-loss db-crash; do
  t=$(date +%s)
  "$ctl" --json drill "$scenario" --lab --clients 4 >"$work/$scenario.out" 2>"$work/$scenario.err"
  rc=$?
  echo "# $scenario --lab took $(( $(date +%s) - t )) s, exit $rc"
  sed 's/^/# /' "$work/$scenario.out" | grep -v '^# {' | head -8
  check "drill $scenario --lab exits 0 (rc $rc)" test "$rc" -eq 0
  [ "$rc" -eq 0 ] || grep -v 'comp=etcd' "$work/$scenario.err" | tail -30 | sed 's/^/# /'
  rep=$(tail -n 1 "$work/$scenario.out")
  check "$scenario --lab: the report says lab, scenario $scenario, pass" \
    test "$(j '[.lab, .scenario, .pass] | map(tostring) | join(" ")')" = "true $scenario true"
  check "$scenario --lab: one phase, the fault on the leader, expecting home" \
    test "$(j '[.details[0].phases[] | (.fault | split(" ")[0]) + "/" + .expect] | join(",")')" = "$( [ "$scenario" = node-loss ] && echo node-kill || echo db-crash)/home"
  check "$scenario --lab: the leader afterwards is in us-east ($(j '.details[0].leader_after'))" \
    test "$(j .leader_region_after)" = us-east
  check "$scenario --lab: writes back within 60 s ($(j .region_rto_s) s)" \
    awk -v v="$(j .region_rto_s)" 'BEGIN { exit !(v != "null" && v != "" && v + 0 < 60) }'
  check "$scenario --lab: 0 lost, 0 doubled, 0 violations (of $(j .acked_total) acknowledged)" \
    test "$(j '[.acked_lost, .doubled, .invariant_violations] | map(tostring) | join(" ")')" = "0 0 0"
done
finish
