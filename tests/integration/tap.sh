# tap.sh — sourced by the integration scripts (itest_*.sh): the "ok - ..."
# / "not ok - ..." lines and the closing "N passed, M failed" line CTest
# shows, and the exit status that goes with it.
#   ok WHAT / not_ok WHAT     count and print one result
#   check WHAT CMD [ARGS...]  run CMD: ok when it succeeds, else not ok
#   finish                    print the summary; exit 0 only without failures
# shellcheck shell=bash
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }
