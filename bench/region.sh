#!/usr/bin/env bash
# region.sh — the multi-region phases of Meridian's benchmark (issue 4,
# "Benchmark"): bench/run.sh calls it after its single-region phases; it
# also runs on its own.
#
# Usage: bench/region.sh [BUILD_DIR]         run the phases (default: build)
#        bench/region.sh --table [JSON_FILE] the people's table of a result
#                                            (stdin when no file)
#
# Phases (each skippable; see the knobs):
#   (1) the two-region lab (`meridianctl lab up --dir` a temporary
#       directory; docs/LAB.md), brought up once for (2) and (3);
#   (2) cross-region lag at 10x peak: loadgen open loop at
#       BENCH_REGION_LAG_RATE (10 x BENCH_RATE = 1,670/s) against cell us
#       through the global entry for BENCH_SECONDS, while the primary's
#       pg_stat_replication row of the DR standby (us-dr1, in eu-west,
#       behind meridian-netem's 40 ms each way) is sampled every 100 ms:
#       write/flush/replay lag (ms) and bytes behind; p50/p99/max of each,
#       next to the rate actually achieved;
#   (3) the extra latency of "durability": "global": the same open loop at
#       BENCH_REGION_GLOBAL_RATE (20/s), regional then global, back to back
#       in the same lab; p50/p99 of each, the difference of the medians
#       against the WAN round trip configured (2 x the link's delay);
#   the lab is taken down (by PID, `meridianctl lab down`), then
#   (4) the region-loss drill: `meridianctl --json drill region-loss
#       --runs BENCH_REGION_DRILL_RUNS --rate BENCH_RATE --report FILE`
#       (it brings up its own labs). A meridianctl that refuses --runs > 1
#       or --rate for lab drills makes the phase "skipped" with the
#       reason, not a failure.
#
# Output: progress on stderr; stdout's LAST line is one JSON object with
# region_rto_s_median, region_acked_lost_max, lag_p99_ms_10x,
# global_durability_extra_ms and the numbers behind them (run on its own,
# the table comes first). Logs and per-phase JSON go to BENCH_REGION_OUT
# (default bench/out/last/region). Everything started here is stopped by
# PID on exit, failure or Ctrl-C; the lab with its own `down`.
# Exit status: 0 (also when phases were skipped or flagged: the JSON says
# so), 1 bad usage or missing binaries.
#
# Knobs (defaults in brackets): BENCH_SECONDS [20], BENCH_RATE [167],
# BENCH_METADATA_BYTES [5000], BENCH_SEED,
# BENCH_KEEP [0] (keep the lab directory after `down`),
#   BENCH_REGION [1]              0: skip every phase below
#   BENCH_REGION_LAG [1]          0: skip (2)
#   BENCH_REGION_LAG_RATE [10 x BENCH_RATE]
#   BENCH_REGION_LAG_WORKERS [256] open-loop workers for (2)
#   BENCH_REGION_GLOBAL [1]       0: skip (3)
#   BENCH_REGION_GLOBAL_RATE [20]
#   BENCH_REGION_DRILL_RUNS [3]   0: skip (4)
#   BENCH_REGION_DRILL_CLIENTS [32] the drill's writers (paced to BENCH_RATE in all)
#   BENCH_REGION_ACCOUNTS [20000] accounts created in the lab's cell (through
#                                 the global entry and two HAProxies, creating
#                                 100,000 takes minutes on a loaded machine)
#   BENCH_REGION_CELL [us]        the cell with a DR standby
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

# ---------------------------------------------------------------- the table

# The people's table of a result object (stdin): numbers next to aims.
region_table() {
  jq -r '
    def f(x): if x == null then "-" else (x * 10 | round / 10 | tostring) end;
    def met(x): if x == null then "-" elif x then "met" else "NOT met" end;
    def sg(x): if x == null then "-" elif x >= 0 then "+" + f(x) else f(x) end;
    def kib(x): if x == null then "-" else "\(x / 1024 | round) KiB" end;
    ["multi-region", "measured", "aim", ""],
    (if .lag_p99_ms_10x != null then
      ["DR lag at 10x peak (ms)",
       "p50 \(f(.lag_p50_ms_10x)), p99 \(f(.lag_p99_ms_10x)), max \(f(.lag_max_ms_10x))",
       (if .lag_rate_reached == false and .aim_lag_met_at_achieved_rate
        then "p99 < 1000 ms: met at the achieved rate only"
        else "p99 < 1000 ms: \(met(.aim_lag_met))" end),
       "\(.lag_metric // "-") of \(.dr_standby // "-"); at \(f(.lag_rate_achieved_per_s))/s of \(f(.lag_rate_target_per_s))/s target\(if .lag_rate_reached == false then " (target NOT reached)" else "" end)"],
      ["  flush lag (ms)", "p50 \(f(.lag_flush_p50_ms_10x)), p99 \(f(.lag_flush_p99_ms_10x)), max \(f(.lag_flush_max_ms_10x))", "",
       "what a region loss could lose"],
      ["  WAL behind replay", "p50 \(kib(.lag_bytes_p50_10x)), p99 \(kib(.lag_bytes_p99_10x)), max \(kib(.lag_bytes_max_10x))", "",
       "\(.lag_samples) samples, every \(.lag_sample_interval_ms) ms; replication via the WAN link: \(.dr_via_wan)"]
     else ["DR lag at 10x peak", "-", "p99 < 1000 ms", (.lag_note // "not run")] end),
    (if .global_durability_extra_ms != null then
      ["global durability extra (ms)", "\(sg(.global_durability_extra_ms)) p50 (\(sg(.global_durability_extra_p99_ms)) p99)",
       "~ +\(f(.wan_rtt_ms)) (WAN RTT): \(f(.global_extra_over_rtt))x",
       "at \(f(.global_rate_per_s))/s: regional p50 \(f(.regional_p50_ms)) / p99 \(f(.regional_p99_ms)), global p50 \(f(.global_p50_ms)) / p99 \(f(.global_p99_ms))"]
     else ["global durability extra", "-", "~ +80 ms", (.global_note // "not run")] end),
    (if .region_rto_s_median != null then
      ["region-loss RTO (s)", "median \(f(.region_rto_s_median)), max \(f(.region_rto_s_max))",
       "<= 30 s (every run): \(met(.aim_region_rto_met))",
       "\(.region_drill_runs) runs, target \(f(.region_drill_rate_per_s))/s, achieved \(f(.region_drill_ack_rate_per_s))/s (last run)\(if .region_drill_rate_reached == false then " (target NOT reached)" else "" end); detection \(f(.region_detection_s_median)) s, promotion \(f(.region_promotion_s_median)) s (medians)"],
      ["region-loss acked lost", "max \(.region_acked_lost_max // "-") = \(f(.region_loss_s_max)) s of traffic",
       "<= 1 s: \(met(.aim_region_loss_met))", (if .region_drill_pass == false then "FLAGGED: drill failed" else "" end)]
     else ["region-loss drill", "-", "RTO <= 30 s, loss <= 1 s", (.region_drill_note // "not run")] end)
    | @tsv' | column -t -s $'\t'
  jq -r 'if .region_flagged then "multi-region: FLAGGED — \(.region_flag_reasons | join("; "))" else empty end'
}

if [ "${1:-}" = --table ]; then
  if [ -n "${2:-}" ]; then region_table < "$2"; else region_table; fi
  exit 0
fi

# ---------------------------------------------------------------- settings

BUILD=$(realpath "${1:-$ROOT/build}")
MERIDIANCTL="$BUILD/meridianctl"
LOADGEN="$BUILD/bench/loadgen"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

SECONDS_RUN=${BENCH_SECONDS:-20}
RATE=${BENCH_RATE:-167}
ACCOUNTS=${BENCH_REGION_ACCOUNTS:-20000}
METADATA_BYTES=${BENCH_METADATA_BYTES:-5000}
SEED=${BENCH_SEED:-$RANDOM}
KEEP=${BENCH_KEEP:-0}
REGION=${BENCH_REGION:-1}
DO_LAG=${BENCH_REGION_LAG:-1}
LAG_RATE=${BENCH_REGION_LAG_RATE:-$(awk -v r="$RATE" 'BEGIN { printf "%g", r * 10 }')}
LAG_WORKERS=${BENCH_REGION_LAG_WORKERS:-256}
DO_GLOBAL=${BENCH_REGION_GLOBAL:-1}
GLOBAL_RATE=${BENCH_REGION_GLOBAL_RATE:-20}
DRILL_RUNS=${BENCH_REGION_DRILL_RUNS:-3}
DRILL_CLIENTS=${BENCH_REGION_DRILL_CLIENTS:-32}
CELL=${BENCH_REGION_CELL:-us}
OUT=${BENCH_REGION_OUT:-$ROOT/bench/out/last/region}
SAMPLE_INTERVAL_MS=100

T0=$(date +%s)
phase() { printf '\n[region %4ss] == %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
note() { printf '[region %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { printf 'bench/region.sh: %s\n' "$*" >&2; exit 1; }

for n in SECONDS_RUN ACCOUNTS METADATA_BYTES LAG_WORKERS DRILL_RUNS DRILL_CLIENTS; do
  [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, not '${!n}'"
done
for n in RATE LAG_RATE GLOBAL_RATE; do
  [[ ${!n} =~ ^[0-9]+([.][0-9]+)?$ ]] || die "$n must be a number, not '${!n}'"
done
[[ $CELL =~ ^[a-z0-9-]+$ ]] || die "BENCH_REGION_CELL must be a cell name, not '$CELL'"
for n in REGION DO_LAG DO_GLOBAL; do
  [ "${!n}" = 0 ] || [ "${!n}" = 1 ] || die "$n must be 0 or 1, not '${!n}'"
done
command -v jq >/dev/null || die "jq not found; run scripts/install-deps.sh"
[ -x "$PGBIN/psql" ] || die "psql not found in $PGBIN; run scripts/install-deps.sh"
if [ "$REGION" = 1 ]; then
  for f in "$MERIDIANCTL" "$LOADGEN" "$BUILD/meridiand" "$BUILD/meridian-keeper" "$BUILD/meridian-netem"; do
    [ -x "$f" ] || die "$f not found; build first (make build, or cmake --build $BUILD)"
  done
fi
rm -rf "$OUT" && mkdir -p "$OUT"
# meridianctl runs scripts/lab.sh (and the drills scripts/cell.sh) from
# $MERIDIAN_SOURCE_DIR. bash reads a script as it goes, so editing the tree
# during a long run would break a lab half way: they run from a copy.
SNAP=$(mktemp -d /tmp/meridian-bench-src.XXXXXX)
chmod 755 "$SNAP"
cp -r "$ROOT/scripts" "$ROOT/topologies" "$SNAP/"
export MERIDIAN_SOURCE_DIR="$SNAP"
LAB=
CHILD_PID=
SAMPLER_PID=

# Run a command in the background and wait for it, so a signal is handled
# at once (bash defers traps while a foreground child runs) and cleanup
# can stop the child by PID. Returns its status.
run_child() {
  "$@" &
  CHILD_PID=$!
  local rc=0
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=
  return "$rc"
}

stop_pid() { # PID: TERM, up to 5 s, KILL
  local p=$1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

lab_down() {
  [ -n "$LAB" ] || return 0
  if [ -f "$LAB/env" ]; then # (a lab that failed before writing env started nothing)
    note "taking the lab down ($LAB)"
    "$MERIDIANCTL" lab down --dir "$LAB" >"$OUT/lab-down.log" 2>&1 \
      || { cat "$OUT/lab-down.log" >&2; note "lab down reported a problem (above)"; }
  fi
  mkdir -p "$OUT/lab-logs"
  cp "$LAB"/logs/*.log "$OUT/lab-logs/" 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then
    note "kept $LAB (BENCH_KEEP=1); remove it when done"
  else
    rm -rf "$LAB"
  fi
  LAB=
}

cleanup() {
  local rc=$?
  # From here on a second Ctrl-C must not cut the lab's `down` short.
  trap '' INT TERM
  trap - EXIT
  stop_pid "$SAMPLER_PID"
  stop_pid "$CHILD_PID"
  lab_down
  rm -rf "$SNAP"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench/region.sh: interrupted" >&2; exit 130' INT TERM

# ---------------------------------------------------------------- helpers

# Nearest-rank percentile Q (0..1) of the numbers in FILE (one a line);
# "null" when there are none.
pct() {
  sort -g "$1" | awk -v q="$2" '{ v[NR] = $1 } END {
    if (NR == 0) { print "null"; exit }
    r = q * NR; k = int(r); if (k < r) k++; if (k < 1) k = 1; if (k > NR) k = NR
    print v[k] + 0 }'
}

# A value of the lab's env file (DIR/env holds shell-quoted assignments).
lab_env() { (set +u; . "$LAB/env" >/dev/null 2>&1; eval "printf '%s' \"\${$1:-}\""); }
vn() { echo "$1" | tr '[:lower:]-.' '[:upper:]__'; }
psql_at() { # PORT SQL...: one row per line, fields separated by ,
  local port=$1; shift
  "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d meridian -XAtq -F , "$@"
}

# Sum of a meridiand counter line (exact text before the value) over the
# cell's meridiand instances in the lab.
md_counter_sum() {
  local pattern=$1 total=0 v p
  for p in $(grep -o "^MD_$(vn "$CELL")_[A-Z0-9_]*=[0-9]*" "$LAB/env" | cut -d= -f2); do
    v=$(curl -s --max-time 3 "http://127.0.0.1:$p/metrics" | awk -v k="$pattern" 'index($0, k " ") == 1 { print $2 }' | head -1 || true)
    total=$(awk -v a="$total" -v b="${v:-0}" 'BEGIN { printf "%d", a + b }')
  done
  echo "$total"
}

# Percentiles of column COL of the sample file: p50 p99 max count.
col_stats() { # FILE COL
  local f="$OUT/col.$2.txt"
  awk -F, -v c="$2" '$c != "" { print $c }' "$1" > "$f"
  echo "$(pct "$f" 0.5) $(pct "$f" 0.99) $(pct "$f" 1) $(wc -l < "$f")"
}

J='{}' # the result object, built up phase by phase
jset() { J=$(jq -c "$@" <<<"$J"); } # jset --arg/--argjson ... 'filter'
REASONS=() # why the results are flagged

# ---------------------------------------------------------------- 1. lab

LEADER=
LEADER_PORT=
URL=
KEY=
DR=
lab_up() {
  LAB=$(mktemp -d /tmp/meridian-bench-lab.XXXXXX)
  chmod 755 "$LAB"
  phase "two-region lab: meridianctl lab up --dir $LAB (about a minute on 2 cores)"
  local t=$SECONDS rc=0 up_s
  run_child "$MERIDIANCTL" lab up --dir "$LAB" >"$OUT/lab-up.out" 2>"$OUT/lab-up.log" || rc=$?
  if [ "$rc" != 0 ]; then
    tail -20 "$OUT/lab-up.log" >&2
    REASONS+=("the lab did not come up (exit $rc; $OUT/lab-up.log)")
    return 1
  fi
  up_s=$(( SECONDS - t ))
  jset --argjson s "$up_s" '.region_lab_up_s = $s'
  "$MERIDIANCTL" lab status --dir "$LAB" --json >"$OUT/lab-status.json" 2>>"$OUT/lab-up.log" || true
  LEADER=$(jq -r --arg c "$CELL" '.cells[$c].leader // empty' "$OUT/lab-status.json" 2>/dev/null || true)
  [ -n "$LEADER" ] || { REASONS+=("cell $CELL has no leader after lab up"); return 1; }
  LEADER_PORT=$(lab_env "PG_$(vn "$LEADER")")
  URL="http://127.0.0.1:$(lab_env "GLOBAL_$(vn "$CELL")")"
  KEY=$(cat "$LAB/cells/$CELL/demo.key")
  DR=$(jq -r --arg c "$CELL" '.cells[] | select(.name == $c) | .nodes[] | select(.role == "dr-standby") | .name' \
         "$LAB/topology.json" | head -1)
  [ -n "$DR" ] || { REASONS+=("cell $CELL has no DR standby in the topology"); return 1; }
  note "lab up in $up_s s: cell $CELL leader $LEADER (PostgreSQL port $LEADER_PORT), DR standby $DR, global entry for the cell $URL"

  # Does replication to the DR standby cross the WAN emulator? (Its WAL
  # receiver's sender port is the netem link's, once the keepers advertise
  # per-region addresses; docs/LAB.md "Open items".)
  local dr_region link link_port sender rtt
  dr_region=$(jq -r --arg n "$DR" '.cells[].nodes[] | select(.name == $n) | .region' "$LAB/topology.json")
  link="pg-$LEADER-from-$dr_region"
  link_port=$(lab_env "LINK_$(vn "$link")")
  sender=$(psql_at "$(lab_env "PG_$(vn "$DR")")" -c "SELECT sender_port FROM pg_stat_wal_receiver" 2>/dev/null || true)
  rtt=$(jq -r --arg l "$link" '[.links[] | select(.name == $l) | .delay_ms * 2] | first // empty' "$OUT/lab-status.json" 2>/dev/null || true)
  if [ -z "$rtt" ]; then # netem did not answer: the topology's WAN delay
    rtt=$(jq -r '[.wan[]? | .one_way_delay_ms // 40] | max // 40 | . * 2' "$LAB/topology.json" 2>/dev/null || echo null)
  fi
  local via=false
  [ -n "$link_port" ] && [ "$sender" = "$link_port" ] && via=true
  jset --arg dr "$DR" --arg leader "$LEADER" --argjson via "$via" --argjson rtt "$rtt" --arg link "$link" \
    '.dr_standby = $dr | .dr_primary = $leader | .dr_via_wan = $via | .dr_link = $link | .wan_rtt_ms = $rtt'
  note "DR standby $DR streams from port ${sender:-?} (WAN link $link: port ${link_port:-none}; via WAN: $via); WAN round trip configured: $rtt ms"
  [ "$via" = true ] || REASONS+=("replication to $DR does not cross the WAN emulator: lag and global latency lack the 80 ms")

  phase "creating $ACCOUNTS accounts in cell $CELL through the global entry"
  run_child "$LOADGEN" --url "$URL" --key "$KEY" --seed "$SEED" --accounts "$ACCOUNTS" --quiet \
    --create-accounts "$ACCOUNTS" >/dev/null 2>"$OUT/accounts.log" \
    || { tail -5 "$OUT/accounts.log" >&2; REASONS+=("account creation in the lab failed"); return 1; }
}

# ---------------------------------------------------------------- 2. lag at 10x

# Sample the primary's pg_stat_replication row of the DR standby every
# 100 ms (aligned to the wall clock) over one connection, COUNT times:
#   epoch_ms,state,unflushed_bytes,sent_minus_replay_bytes,behind_replay_bytes,write_ms,flush_ms,replay_ms
# (write/flush/replay lag are NULL, i.e. empty, when PostgreSQL has no
# recent measurement: the standby is idle and caught up).
start_sampler() { # COUNT FILE
  local count=$1 file=$2 i
  {
    for ((i = 0; i < count; i++)); do
      cat <<SQL
SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint, coalesce(r.state, 'absent'),
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn)::bigint,
       pg_wal_lsn_diff(r.sent_lsn, r.replay_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint,
       round((extract(epoch FROM r.write_lag) * 1000)::numeric, 3),
       round((extract(epoch FROM r.flush_lag) * 1000)::numeric, 3),
       round((extract(epoch FROM r.replay_lag) * 1000)::numeric, 3)
  FROM (SELECT 1) one LEFT JOIN pg_stat_replication r ON r.application_name = '$DR';
SELECT pg_sleep(0.1 - (extract(epoch FROM clock_timestamp())::numeric % 0.1)::float8) \g /dev/null
SQL
    done
  } > "$OUT/sampler.sql"
  psql_at "$LEADER_PORT" -f "$OUT/sampler.sql" >"$file" 2>"$OUT/sampler.log" &
  SAMPLER_PID=$!
}

lag_phase() {
  local secs=$SECONDS_RUN
  phase "DR lag at 10x peak: loadgen --open --rate $LAG_RATE (${LAG_WORKERS} workers) for $secs s on cell $CELL, sampling $DR's lag every ${SAMPLE_INTERVAL_MS} ms"
  psql_at "$LEADER_PORT" -c CHECKPOINT >/dev/null 2>&1 || true
  local samples="$OUT/lag-samples.csv"
  # Enough samples for the run, a slow start and an overrun (an open loop
  # that cannot keep up finishes late); stopped by PID after the run.
  start_sampler $(( (secs * 3 + 30) * 1000 / SAMPLE_INTERVAL_MS )) "$samples"
  sleep 1
  local t_start t_end rc=0
  t_start=$(date +%s%3N)
  run_child "$LOADGEN" --url "$URL" --key "$KEY" --seed "$SEED" --accounts "$ACCOUNTS" \
    --metadata-bytes "$METADATA_BYTES" --workers "$LAG_WORKERS" --open --rate "$LAG_RATE" \
    --seconds "$secs" --json >"$OUT/lag-loadgen.json" 2> >(tee "$OUT/lag-loadgen.log" >&2) || rc=$?
  t_end=$(date +%s%3N)
  sleep 2 # a little of the catch-up after the load, for the record
  stop_pid "$SAMPLER_PID"; SAMPLER_PID=
  if [ "$rc" != 0 ] && [ "$rc" != 2 ]; then
    jset --arg n "loadgen failed (exit $rc)" '.lag_note = $n'
    REASONS+=("lag phase: loadgen failed (exit $rc)")
    return 0
  fi
  [ "$rc" = 2 ] && REASONS+=("lag phase: $(jq -r .errors "$OUT/lag-loadgen.json") requests failed at $LAG_RATE/s")
  # The samples of the load window (loadgen starts sending 200 ms after it
  # starts): t_start + 200 ms .. t_end.
  awk -F, -v a=$(( t_start + 200 )) -v b="$t_end" '$1 >= a && $1 <= b' "$samples" > "$OUT/lag-window.csv"
  local total absent p50 p99 max n
  total=$(wc -l < "$OUT/lag-window.csv")
  absent=$(awk -F, '$2 != "streaming"' "$OUT/lag-window.csv" | wc -l)
  # A NULL lag while nothing is behind means "caught up": count it as 0.
  awk -F, 'BEGIN { OFS = "," } $2 == "streaming" {
      for (i = 6; i <= 8; i++) if ($i == "" && $5 == 0) $i = 0
      print }' "$OUT/lag-window.csv" > "$OUT/lag-streaming.csv"
  read -r p50 p99 max n < <(col_stats "$OUT/lag-streaming.csv" 8)
  local w50 w99 wmax f50 f99 fmax b50 b99 bmax u99 umax s99 smax
  read -r w50 w99 wmax _ < <(col_stats "$OUT/lag-streaming.csv" 6)
  read -r f50 f99 fmax _ < <(col_stats "$OUT/lag-streaming.csv" 7)
  read -r b50 b99 bmax _ < <(col_stats "$OUT/lag-streaming.csv" 5)
  read -r _ u99 umax _ < <(col_stats "$OUT/lag-streaming.csv" 3)
  read -r _ s99 smax _ < <(col_stats "$OUT/lag-streaming.csv" 4)
  jset --argjson lg "$(cat "$OUT/lag-loadgen.json")" \
    --argjson p50 "$p50" --argjson p99 "$p99" --argjson max "$max" --argjson n "$n" \
    --argjson w50 "$w50" --argjson w99 "$w99" --argjson wmax "$wmax" \
    --argjson f50 "$f50" --argjson f99 "$f99" --argjson fmax "$fmax" \
    --argjson b50 "$b50" --argjson b99 "$b99" --argjson bmax "$bmax" \
    --argjson u99 "$u99" --argjson umax "$umax" --argjson s99 "$s99" --argjson smax "$smax" \
    --argjson total "$total" --argjson absent "$absent" --argjson iv "$SAMPLE_INTERVAL_MS" \
    --argjson target "$LAG_RATE" --argjson workers "$LAG_WORKERS" '
    .lag_metric = "replay_lag" | .lag_source = "pg_stat_replication on the primary"
    | .lag_p50_ms_10x = $p50 | .lag_p99_ms_10x = $p99 | .lag_max_ms_10x = $max
    | .lag_write_p50_ms_10x = $w50 | .lag_write_p99_ms_10x = $w99 | .lag_write_max_ms_10x = $wmax
    | .lag_flush_p50_ms_10x = $f50 | .lag_flush_p99_ms_10x = $f99 | .lag_flush_max_ms_10x = $fmax
    | .lag_bytes_p50_10x = $b50 | .lag_bytes_p99_10x = $b99 | .lag_bytes_max_10x = $bmax
    | .lag_unflushed_bytes_p99_10x = $u99 | .lag_unflushed_bytes_max_10x = $umax
    | .lag_sent_minus_replay_bytes_p99_10x = $s99 | .lag_sent_minus_replay_bytes_max_10x = $smax
    | .lag_samples = $total | .lag_samples_with_lag = $n | .lag_samples_not_streaming = $absent
    | .lag_sample_interval_ms = $iv
    | .lag_rate_target_per_s = $target | .lag_rate_achieved_per_s = $lg.transfers_per_s
    | .lag_rate_reached = ($lg.transfers_per_s >= 0.95 * $target)
    | .lag_workers = $workers | .lag_seconds = $lg.seconds | .lag_elapsed_s = $lg.elapsed_s
    | .lag_requests = $lg.requests | .lag_ok = $lg.ok | .lag_errors = $lg.errors
    | .lag_late_sends = $lg.late_sends
    | .lag_request_p50_ms = $lg.p50_ms | .lag_request_p99_ms = $lg.p99_ms'
  [ "$absent" = 0 ] || REASONS+=("lag phase: $DR was not streaming in $absent of $total samples")
  note "lag at $(jq -r .lag_rate_achieved_per_s <<<"$J")/s achieved (target $LAG_RATE/s): replay lag p50 $p50 / p99 $p99 / max $max ms (flush p99 $f99 ms; bytes behind replay p99 $b99); $n of $total samples"
}

# ---------------------------------------------------------------- 3. global durability

global_run() { # regional|global -> OUT/global-<d>.json; returns loadgen's status
  local d=$1 rc=0
  run_child "$LOADGEN" --url "$URL" --key "$KEY" --seed "$SEED" --accounts "$ACCOUNTS" \
    --metadata-bytes "$METADATA_BYTES" --open --rate "$GLOBAL_RATE" --seconds "$SECONDS_RUN" \
    --durability "$d" --json --quiet >"$OUT/global-$d.json" 2> >(tee "$OUT/global-$d.log" >&2) || rc=$?
  return "$rc"
}

global_phase() {
  phase "global durability: loadgen --open --rate $GLOBAL_RATE for $SECONDS_RUN s, regional then global"
  local c0 t0 c1 t1 rc_l=0 rc_g=0
  c0=$(md_counter_sum 'meridian_global_durability_waits_total{outcome="confirmed"}')
  t0=$(md_counter_sum 'meridian_global_durability_waits_total{outcome="timeout"}')
  global_run regional || rc_l=$?
  global_run global || rc_g=$?
  c1=$(md_counter_sum 'meridian_global_durability_waits_total{outcome="confirmed"}')
  t1=$(md_counter_sum 'meridian_global_durability_waits_total{outcome="timeout"}')
  if { [ "$rc_l" != 0 ] && [ "$rc_l" != 2 ]; } || { [ "$rc_g" != 0 ] && [ "$rc_g" != 2 ]; }; then
    jset --arg n "loadgen failed (exit $rc_l / $rc_g)" '.global_note = $n'
    REASONS+=("global phase: loadgen failed (exit $rc_l / $rc_g)")
    return 0
  fi
  local el eg
  el=$(jq -r .errors "$OUT/global-regional.json"); eg=$(jq -r .errors "$OUT/global-global.json")
  [ "$el" = 0 ] || REASONS+=("global phase: $el regional requests failed")
  [ "$eg" = 0 ] || REASONS+=("global phase: $eg global requests failed (503 durability_timeout?)")
  jset --argjson l "$(cat "$OUT/global-regional.json")" --argjson g "$(cat "$OUT/global-global.json")" \
    --argjson rate "$GLOBAL_RATE" --argjson conf $(( c1 - c0 )) --argjson tout $(( t1 - t0 )) '
    .global_rate_per_s = $rate
    | .regional_p50_ms = $l.p50_ms | .regional_p99_ms = $l.p99_ms | .regional_ok = $l.ok | .regional_errors = $l.errors
    | .global_p50_ms = $g.p50_ms | .global_p99_ms = $g.p99_ms | .global_ok = $g.ok | .global_errors = $g.errors
    | .global_achieved_per_s = $g.transfers_per_s
    | .global_durability_extra_ms = ((($g.p50_ms - $l.p50_ms) * 1000 | round) / 1000)
    | .global_durability_extra_p99_ms = ((($g.p99_ms - $l.p99_ms) * 1000 | round) / 1000)
    | .global_extra_over_rtt = (if (.wan_rtt_ms // 0) > 0
        then ((.global_durability_extra_ms / .wan_rtt_ms) * 100 | round) / 100 else null end)
    | .global_waits_confirmed = $conf | .global_waits_timeout = $tout'
  note "regional p50 $(jq -r .regional_p50_ms <<<"$J") / p99 $(jq -r .regional_p99_ms <<<"$J") ms; global p50 $(jq -r .global_p50_ms <<<"$J") / p99 $(jq -r .global_p99_ms <<<"$J") ms: +$(jq -r .global_durability_extra_ms <<<"$J") ms at p50 (WAN RTT $(jq -r .wan_rtt_ms <<<"$J") ms); meridiand global waits confirmed $(( c1 - c0 )), timed out $(( t1 - t0 ))"
}

# ---------------------------------------------------------------- 4. region-loss drill

drill_phase() {
  local runs=$DRILL_RUNS rc=0 rate
  rate=$(awk -v r="$RATE" 'BEGIN { printf "%.0f", r }') # the drill takes whole numbers
  local args=(--runs "$runs" --rate "$rate" --clients "$DRILL_CLIENTS" --report "$OUT/drill.html")
  phase "region-loss drill: meridianctl --json drill region-loss --runs $runs --rate $rate --clients $DRILL_CLIENTS (each run brings up its own lab)"
  run_child "$MERIDIANCTL" --json drill region-loss "${args[@]}" \
    >"$OUT/drill.out" 2> >(tee "$OUT/drill.log" >&2) || rc=$?
  # A meridianctl that wants --lab for lab drills: the same with --lab.
  if [ "$rc" = 2 ] && grep -q -- '--lab' "$OUT/drill.log"; then
    note "this meridianctl wants --lab for lab drills; again with --lab"
    rc=0
    run_child "$MERIDIANCTL" --json drill region-loss --lab "${args[@]}" \
      >"$OUT/drill.out" 2> >(tee "$OUT/drill.log" >&2) || rc=$?
  fi
  local last
  last=$(tail -n 1 "$OUT/drill.out" 2>/dev/null || true)
  # (jq 1.6 -e answers 0 to empty input: test for a line first.)
  if [ -n "$last" ] && jq -e 'type == "object" and (has("region_rto_s_median") or has("region_rto_s"))' >/dev/null 2>&1 <<<"$last"; then
    jset --argjson d "$last" --argjson rc "$rc" --argjson rate "$rate" '
      .region_rto_s_median = ($d.region_rto_s_median // $d.region_rto_s)
      | .region_rto_s_max = ($d.region_rto_s_max // $d.region_rto_s)
      | .region_acked_lost_max = ($d.region_acked_lost_max // $d.region_acked_lost)
      | .region_loss_s_max = ($d.region_loss_s_max // $d.region_loss_s)
      | .region_drill_runs = ($d.runs // ($d.details // [] | length))
      | .region_drill_rate_per_s = $rate
      | .region_drill_ack_rate_per_s = ($d.region_ack_rate_per_s // null | if . == null then null else (. * 10 | round) / 10 end)
      | .region_drill_rate_reached = (if .region_drill_ack_rate_per_s == null then null
                                      else .region_drill_ack_rate_per_s >= 0.95 * $rate end)
      | .region_drill_rto_s = ($d.rto_s // [$d.details[]?.rto_s])
      | .region_drill_acked_lost = [$d.details[]?.region_acked_lost]
      | .region_detection_s_median = $d.detection_s_median
      | .region_promotion_s_median = $d.promotion_s_median
      | .region_failover_kind = $d.region_failover_kind
      | .region_drill_acked_total = $d.acked_total
      | .region_drill_invariant_violations = $d.invariant_violations
      | .region_drill_pass = ($d.pass // ($rc == 0)) | .region_drill_exit = $rc'
    [ "$(jq -r .region_drill_pass <<<"$J")" = true ] || REASONS+=("region-loss drill failed (exit $rc; $OUT/drill.log)")
    note "drill: exit $rc, region RTO median $(jq -r .region_rto_s_median <<<"$J") s, max $(jq -r .region_rto_s_max <<<"$J") s, acked lost max $(jq -r .region_acked_lost_max <<<"$J") ($(jq -r .region_loss_s_max <<<"$J") s of traffic)"
  elif [ "$rc" = 2 ]; then
    # Refused (usage): before lab drills take --runs/--rate, not a failure.
    local why
    why=$(grep -v '^\[' "$OUT/drill.log" | grep -m1 -iE 'error|usage|wants|no --runs|unknown' || tail -n 1 "$OUT/drill.log")
    jset --arg n "skipped: meridianctl refused the drill (${why:-exit 2}); lab drills do not take --runs $runs --rate $rate yet" \
      '.region_drill_note = $n'
    note "drill $(jq -r .region_drill_note <<<"$J")"
  else
    jset --arg n "failed: no JSON report (exit $rc; see $OUT/drill.log)" '.region_drill_note = $n'
    REASONS+=("region-loss drill failed: no JSON report (exit $rc)")
    note "drill $(jq -r .region_drill_note <<<"$J")"
  fi
}

# ---------------------------------------------------------------- main

jset --argjson runs "$DRILL_RUNS" --argjson on "$REGION" '
  .region_rto_s_median = null | .region_rto_s_max = null | .region_acked_lost_max = null
  | .region_loss_s_max = null | .lag_p99_ms_10x = null | .global_durability_extra_ms = null
  | .region_drill_runs = $runs | .region_phases = ($on == 1)'
if [ "$REGION" = 0 ]; then
  jset '.lag_note = "skipped (BENCH_REGION=0)" | .global_note = "skipped (BENCH_REGION=0)"
        | .region_drill_note = "skipped (BENCH_REGION=0)"'
else
  if [ "$DO_LAG" = 1 ] || [ "$DO_GLOBAL" = 1 ]; then
    if lab_up; then
      if [ "$DO_LAG" = 1 ]; then lag_phase; else jset '.lag_note = "skipped (BENCH_REGION_LAG=0)"'; fi
      if [ "$DO_GLOBAL" = 1 ]; then global_phase; else jset '.global_note = "skipped (BENCH_REGION_GLOBAL=0)"'; fi
    else
      jset --arg n "not run: ${REASONS[-1]}" '.lag_note = $n | .global_note = $n'
    fi
    lab_down # the drill brings up labs of its own
  else
    jset '.lag_note = "skipped (BENCH_REGION_LAG=0)" | .global_note = "skipped (BENCH_REGION_GLOBAL=0)"'
  fi
  if [ "$DRILL_RUNS" -gt 0 ]; then drill_phase; else jset '.region_drill_note = "skipped (BENCH_REGION_DRILL_RUNS=0)"'; fi
fi

REASONS_JSON=$(printf '%s\n' "${REASONS[@]+"${REASONS[@]}"}" | jq -R . | jq -sc 'map(select(length > 0))')
jset --argjson r "$REASONS_JSON" '
  .aim_lag_met_at_achieved_rate = (if .lag_p99_ms_10x == null then null else .lag_p99_ms_10x < 1000 end)
  | .aim_lag_met = (if .lag_p99_ms_10x == null then null
                    else (.aim_lag_met_at_achieved_rate and .lag_rate_reached) end)
  | .aim_region_rto_met = (if .region_rto_s_max == null then null else .region_rto_s_max <= 30 end)
  | .aim_region_loss_met = (if .region_loss_s_max == null then null else .region_loss_s_max <= 1 end)
  | .region_flag_reasons = $r | .region_flagged = ($r | length > 0)'
echo "$J" > "$OUT/region.json"
if [ "${BENCH_REGION_QUIET_TABLE:-0}" != 1 ]; then
  echo
  region_table <<<"$J"
  echo
fi
echo "$J"
