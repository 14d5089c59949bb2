#!/usr/bin/env bash
# itest_drill_partition.sh — `meridianctl drill partition` end to end
# (issue 4 items 6 and 10, requirements scenario 3; docs/DRILLS.md "Lab
# drills"): the drill starts a two-region lab, runs the bank workload on
# cell us through the global entry, cuts us-east off from eu-west and the
# witness (WAN links black-holed, its etcd member frozen), waits for the
# DR standby us-dr1 to take the cell on its own (automatic policy) and
# for writes to come back through the global entry, heals the partition,
# and waits until the three us-east nodes stream from us-dr1 again
# (pg_rewind, no manual step). Asserts from the JSON report: pass; one
# writer at a time (no acknowledgement sent after us-dr1 took the cell is
# missing: stale_primary_acks 0); nothing doubled, no invariant broken;
# the loss within the reported bound; every us-east node rejoined; the
# rewinds reported; an HTML report with the phases. About 3-4 minutes on
# 2 cores.
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
le_num() { awk -v v="$1" -v m="$2" 'BEGIN { exit !(v != "null" && v != "" && m != "null" && v + 0 <= m + 0) }'; }

work=$(mktemp -d /tmp/meridian-itest-drill-partition-XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

t=$(date +%s)
"$ctl" --json drill partition --clients 4 --report "$work/report.html" \
  >"$work/out" 2>"$work/err"
rc=$?
echo "# drill took $(( $(date +%s) - t )) s, exit $rc"
sed 's/^/# /' "$work/out" | grep -v '^# {' | head -20
check "drill partition exits 0 (rc $rc)" test "$rc" -eq 0
[ "$rc" -eq 0 ] || grep -v 'comp=etcd' "$work/err" | tail -30 | sed 's/^/# /'
rep=$(tail -n 1 "$work/out")
j() { jq -r "$1" <<<"$rep" 2>/dev/null; }
check "report is JSON with scenario partition" test "$(j .scenario)" = partition
check "pass == true" test "$(j .pass)" = true
check "two phases: partition us-east (dr), heal (rejoin)" \
  test "$(j '[.details[0].phases[] | .fault + "/" + .expect] | join(",")')" = "partition us-east/dr,heal/rejoin"
check "phase 1: us-dr1 took the cell, in eu-west" \
  test "$(j '.details[0].phases[0] | .leader_after + " " + .region_after')" = "us-dr1 eu-west"
check "phase 1: writes back within 120 s ($(j '.details[0].phases[0].rto_s') s)" \
  lt "$(j '.details[0].phases[0].rto_s')" 120
check "no acknowledgement from a stale primary (stale_primary_acks 0)" \
  test "$(j '.details[0].stale_primary_acks')" = 0
check "doubled == 0, invariant_violations == 0" \
  test "$(j '[.doubled, .invariant_violations] | map(tostring) | join(" ")')" = "0 0"
check "loss $(j .region_loss_s) s ($(j .region_acked_lost) transfers) within the bound $(j .region_loss_bound_s) s" \
  le_num "$(j .region_loss_s)" "$(j .region_loss_bound_s)"
check "the bound is the cell's max_loss_s plus the DR-aware fence delay (1 + 0.5 s: $(j .region_loss_bound_s))" \
  test "$(j '.region_loss_bound_s')" = 1.5
check "phase 2: the three us-east nodes stream from the leader again ($(j '.details[0].phases[1].rejoined') of $(j '.details[0].phases[1].rejoin_wanted'), $(j '.details[0].phases[1].rejoin_s') s)" \
  test "$(j '.details[0].phases[1] | [.rejoined, .rejoin_wanted] | map(tostring) | join(" ")')" = "3 3"
check "phase 2: the keepers reported their rewinds (>= 1: $(j '.details[0].phases[1].rewinds'), $(j '.details[0].phases[1].discarded_wal_bytes') WAL bytes discarded)" \
  test "$(j '.details[0].phases[1].rewinds')" -ge 1
check "the HTML report exists with the phase table" grep -q 'rejoined' "$work/report.html"
check "  and the JSON beside it" test "$(jq -r .scenario "$work/report.json" 2>/dev/null)" = partition
labdir=$(j .lab_dir)
check "the drill's lab is gone ($labdir)" test ! -e "$labdir"
finish
