#!/usr/bin/env bash
# itest_drill_region.sh — `meridianctl drill region-loss --lab` end to
# end (issue 4 item 10; docs/DRILLS.md "Lab drills"): the drill starts a
# two-region lab in /tmp, runs the bank workload on cell us through the
# global entry, loses us-east, waits for the DR standby us-dr1 to take
# over on its own (automatic policy), checks us-dr1's database and takes
# the lab down. Asserts the JSON report: pass, nothing doubled, no
# invariant violation, writes back within 120 s, and the acknowledged
# transfers lost worth at most 5 s of traffic (generous: measured 0 and
# 0.017 s on this machine, docs/DRILLS.md). Then `drill az-loss --lab`
# (the zone of cell us's leader lost): an in-region failover, no
# acknowledged transfer lost. About 2 minutes per drill on 2 cores;
# ITEST_DRILL_AZ=0 skips the second.
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

work=$(mktemp -d /tmp/meridian-itest-drill-region-XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

# Bad usage first (cheap): the lab scenarios imply --lab; isolate-primary
# has no lab variant; a lab given by --lab-dir serves one run.
"$ctl" drill region-loss --cell-dir /tmp >/dev/null 2>"$work/u1.err"
check "region-loss --cell-dir: exit 2" test $? -eq 2
check "  and points to --lab-dir" grep -q -- '--lab-dir' "$work/u1.err"
"$ctl" drill isolate-primary --lab >/dev/null 2>"$work/u5.err"
check "isolate-primary --lab: exit 2" test $? -eq 2
check "  and points to drill partition" grep -q 'drill partition' "$work/u5.err"
"$ctl" drill partition --lab-dir /tmp --runs 2 >/dev/null 2>"$work/u3.err"
check "partition --lab-dir DIR --runs 2: exit 2" test $? -eq 2
check "  and says the lab serves one run" grep -q 'one run' "$work/u3.err"
"$ctl" drill region-loss --rate -5 >/dev/null 2>&1
check "region-loss --rate -5: exit 2" test $? -eq 2
"$ctl" drill split-brain >/dev/null 2>"$work/u4.err"
check "an unknown scenario: exit 2, naming the lab scenarios" \
  grep -q 'etcd-majority-loss' "$work/u4.err"
"$ctl" drill region-loss --lab-dir /nonexistent/lab >/dev/null 2>"$work/u2.err"
check "region-loss --lab-dir with no lab there: exit 1" test $? -eq 1

t=$(date +%s)
"$ctl" --json drill region-loss --lab --clients 4 --report "$work/report.json" \
  >"$work/out" 2>"$work/err"
rc=$?
echo "# drill took $(( $(date +%s) - t )) s, exit $rc"
sed 's/^/# /' "$work/out" | grep -v '^# {' | head -20
check "drill region-loss --lab exits 0 (rc $rc)" test "$rc" -eq 0
[ "$rc" -eq 0 ] || tail -30 "$work/err" | sed 's/^/# /'
rep=$(tail -n 1 "$work/out")
j() { jq -r "$1" <<<"$rep" 2>/dev/null; }
check "report is JSON with scenario region-loss" test "$(j .scenario)" = region-loss
check "pass == true" test "$(j .pass)" = true
check "doubled == 0" test "$(j .doubled)" = 0
check "invariant_violations == 0" test "$(j .invariant_violations)" = 0
rto=$(j .region_rto_s)
check "region_rto_s < 120 ($rto)" awk -v v="$rto" 'BEGIN { exit !(v != "null" && v != "" && v + 0 < 120) }'
loss=$(j .region_loss_s)
check "region_loss_s <= 5 ($loss s, $(j .region_acked_lost) acknowledged transfers lost)" \
  awk -v v="$loss" 'BEGIN { exit !(v != "null" && v != "" && v + 0 <= 5) }'
check "the new leader is the DR standby us-dr1 ($(j '.details[0].leader_after'))" \
  test "$(j '.details[0].leader_after')" = us-dr1
check "history kind is regional_failover ($(j .region_failover_kind))" \
  test "$(j .region_failover_kind)" = regional_failover
check "detection_s and promotion_s measured ($(j .detection_s), $(j .promotion_s))" \
  test "$(j '.detection_s != null and .promotion_s != null')" = true
check "--report wrote the same report" test "$(jq -r .scenario "$work/report.json" 2>/dev/null)" = region-loss
labdir=$(j .lab_dir)
check "the drill's lab is gone ($labdir)" test ! -e "$labdir"

# ---- az-loss: lose us-east's zone of the leader (az1, with etcd-us)
if [ "${ITEST_DRILL_AZ:-1}" = 1 ]; then
  t=$(date +%s)
  "$ctl" --json drill az-loss --lab --clients 4 >"$work/az.out" 2>"$work/az.err"
  rc=$?
  echo "# az-loss drill took $(( $(date +%s) - t )) s, exit $rc"
  sed 's/^/# /' "$work/az.out" | grep -v '^# {' | head -20
  check "drill az-loss --lab exits 0 (rc $rc)" test "$rc" -eq 0
  [ "$rc" -eq 0 ] || tail -30 "$work/az.err" | sed 's/^/# /'
  rep=$(tail -n 1 "$work/az.out")
  check "az-loss: pass == true" test "$(j .pass)" = true
  check "az-loss: zone az1 lost" test "$(j .zone_lost)" = az1
  check "az-loss: the new leader is in us-east ($(j '.details[0].leader_after'), $(j .leader_region_after))" \
    test "$(j .leader_region_after)" = us-east
  check "az-loss: 0 acknowledged transfers lost, 0 doubled, 0 violations" \
    test "$(j '[.region_acked_lost, .doubled, .invariant_violations] | map(tostring) | join(" ")')" = "0 0 0"
  rto=$(j .region_rto_s)
  check "az-loss: writes back within 120 s ($rto)" \
    awk -v v="$rto" 'BEGIN { exit !(v != "null" && v != "" && v + 0 < 120) }'
else
  echo "# az-loss skipped (ITEST_DRILL_AZ=0)"
fi
finish
