#!/usr/bin/env bash
# itest_drill.sh — `meridianctl drill` end to end: each scenario starts
# its own cell (etcd x3, three PostgreSQL nodes with keepers, two
# meridiand following the leader) under /tmp, runs the bank workload,
# injects the fault once, and must report, in the JSON line it ends with:
# no acknowledged transfer lost or doubled, no invariant violation, some
# transfers acknowledged, RTO under 30 s, a healthy cell at the end, and
# pass. isolate-primary runs only when scripts/cell.sh can isolate a node
# (`cell.sh up --netem`, `isolate`, `heal`); otherwise the drill must say
# "not available" with exit 2, and the test says so and skips it.
#
# The drills remove their cells themselves (also on failure or Ctrl-C);
# with DRILL_KEEP=1 they keep them (and their logs) for a look.
set -u
here=$(cd "$(dirname "$0")" && pwd)
export MERIDIAN_SOURCE_DIR=${MERIDIAN_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${MERIDIAN_BIN_DIR:?MERIDIAN_BIN_DIR must name the build directory}
RTO_MAX_S=${RTO_MAX_S:-30}

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $*"; }

command -v jq >/dev/null || { not_ok "jq is installed (scripts/install-deps.sh)"; echo "0 passed, 1 failed"; exit 1; }
logs=$(mktemp -d /tmp/meridian-itest-drill-XXXXXX)
trap 'if [ "$failed" -eq 0 ]; then rm -rf "$logs"; else echo "# drill output kept in $logs"; fi' EXIT

keep=()
[ "${DRILL_KEEP:-0}" = 1 ] && keep=(--keep)

# Run one drill; check its exit status and its report.
drill() {
  local scenario=$1 out="$logs/$1.out" err="$logs/$1.err" rc=0 json
  local started=$SECONDS
  "$bin/meridianctl" --json drill "$scenario" --runs 1 --report "$logs/$scenario.report.json" \
    "${keep[@]}" >"$out" 2>"$err" || rc=$?
  echo "# $scenario: exit $rc after $((SECONDS - started)) s"
  sed 's/^/#   /' "$out" | head -n -1
  json=$(tail -n 1 "$out")
  if ! jq -e . >/dev/null 2>&1 <<<"$json"; then
    not_ok "$scenario: the last line of stdout is one JSON object"
    tail -n 20 "$err" | sed 's/^/#   /'
    return
  fi
  if [ "$scenario" = isolate-primary ] && [ "$rc" = 2 ] &&
     [ "$(jq -r .available <<<"$json")" = false ]; then
    echo "ok - isolate-primary # SKIP $(jq -r .error <<<"$json")"
    return
  fi
  local checks=(
    '.acked_total > 0|transfers were acknowledged'
    '.acked_lost == 0|no acknowledged transfer lost (RPO 0)'
    '.doubled == 0|no transfer doubled'
    '.invariant_violations == 0|no invariant violation'
    '.read_violations == 0 and .reads_total > 0|balances summed to zero at every read'
    ".rto_s_max != null and .rto_s_max < $RTO_MAX_S|RTO under $RTO_MAX_S s"
    '.end_state_healthy == true|one primary and streaming synchronous standbys at the end'
    '.details[0].db_checked == true|the database was checked'
    '.pass == true|the drill passes'
  )
  local c expr what
  for c in "${checks[@]}"; do
    expr=${c%%|*}
    what=${c#*|}
    if jq -e "$expr" >/dev/null <<<"$json"; then
      ok "$scenario: $what"
    else
      not_ok "$scenario: $what ($expr)"
    fi
  done
  if [ "$rc" = 0 ]; then ok "$scenario: exit status 0"; else not_ok "$scenario: exit status 0 (got $rc)"; fi
  [ "$failed" -gt 0 ] && tail -n 30 "$err" | sed 's/^/#   /'
  echo "# $scenario: $(jq -c '{rto_s_max, detection_s_median, promotion_s_median, acked_total, acked_lost, invariant_violations}' <<<"$json")"
}

drill node-loss
drill db-crash
drill isolate-primary

# A bad scenario is a usage error (exit 2), not a drill.
rc=0
"$bin/meridianctl" drill no-such-fault >/dev/null 2>&1 || rc=$?
if [ "$rc" = 2 ]; then ok "an unknown scenario is refused (exit 2)"; else not_ok "an unknown scenario is refused (exit 2, got $rc)"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
