#!/usr/bin/env bash
# run.sh — Meridian's benchmark (`make bench`): meridiand against
# PostgreSQL's own pgbench TPC-B-like baseline, on the same machine, the
# same PostgreSQL 15 cluster and the same durability (a primary that
# waits for one synchronous standby before every commit returns).
#
# Usage: bench/run.sh [BUILD_DIR]     (default: build; `make bench` passes it)
#
# Environment knobs (defaults in brackets):
#   BENCH_CLIENTS [32]      concurrent clients: pgbench -c and loadgen --clients
#   BENCH_MERIDIAN_CLIENTS [BENCH_CLIENTS]  loadgen --clients only (to explore
#                           batching; the headline ratio uses the same C)
#   BENCH_SECONDS [20]      duration of each measured run
#   BENCH_RATE [167]        open-loop rate, transfers/s (10,000/min peak)
#   BENCH_ACCOUNTS [100000] accounts created for the transfers
#   BENCH_METADATA_BYTES [5000]  metadata string per transfer
#   BENCH_PGBENCH_SCALE [10]     pgbench -i -s
#   BENCH_WARMUP_SECONDS [2]     unmeasured closed-loop warm-up
#   BENCH_MERIDIAND_SETTINGS []  extra meridiand config, comma-separated
#                           key=value (e.g. "workers=2,commit_wait_us=2000")
#   BENCH_PG_SETTINGS []    extra postgresql.conf lines for the primary and
#                           the standby, comma-separated key=value
#                           (e.g. "wal_compression=on,log_autovacuum_min_duration=0")
#   BENCH_KEEP [0]          1: keep the temporary directory (data, logs)
#   BENCH_PGBENCH_ONLY [0]  1: stop after the baseline (no meridiand needed)
#   BENCH_DRILL_RUNS [5]    runs of the failover drill (0: skip it)
#   BENCH_NFF_SECONDS [60]  no-false-failover run under load (0: skip it)
#   BENCH_REGION [1]        0: skip the multi-region phases (9)-(11) below
#   BENCH_REGION_LAG [1]    0: skip (9), the DR lag at 10x peak
#   BENCH_REGION_LAG_RATE [10 x BENCH_RATE]  its open-loop rate
#   BENCH_REGION_LAG_WORKERS [256]           its open-loop workers
#   BENCH_REGION_GLOBAL [1] 0: skip (10), the global durability latency
#   BENCH_REGION_GLOBAL_RATE [20]            its open-loop rate
#   BENCH_REGION_DRILL_RUNS [3]  runs of the region-loss drill (0: skip it)
#   BENCH_REGION_DRILL_CLIENTS [32] its writers (paced to BENCH_RATE in all)
#   BENCH_REGION_ACCOUNTS [20000]    accounts created in the lab's cell
#
# Phases: (1) primary + synchronous standby via scripts/pg.sh, (2) pgbench,
# (3) meridiand on a fresh database with 100,000 accounts, (4) loadgen
# closed loop (throughput, latency), (5) loadgen open loop at the peak rate
# (latency without coordinated omission), (6) a table and, as the LAST
# line of stdout, one JSON object; (7) an integrity check (ok answers vs
# committed rows, debits = credits); (8) the failover drill
# `meridianctl drill node-loss --runs 5 --json` on a cell of its own
# (etcd x3, three keepers, two meridiand), whose rto_s_median, rto_s_max,
# acked_lost and invariant_violations join the JSON line (a failed drill
# flags the results). Then, in bench/region.sh: the two-region lab
# (`meridianctl lab up`) for (9) the DR standby's lag at 10x the peak rate
# and (10) the extra latency of "durability": "global", and after the lab
# is down (11) `meridianctl drill region-loss --runs 3 --rate 167` (labs of
# its own; reported as skipped, not failed, by a meridianctl that refuses
# those options). Their numbers (lag_p99_ms_10x,
# global_durability_extra_ms, region_rto_s_median, region_acked_lost_max,
# ...) join the table and the JSON line. Everything started here is stopped by
# PID on exit, failure or Ctrl-C. Logs of the last run are copied to
# bench/out/last/. Exit status: 0, 3 when a run had errors (results
# flagged, JSON still printed), 1 on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath "${1:-$ROOT/build}")
PG="$ROOT/scripts/pg.sh"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

CLIENTS=${BENCH_CLIENTS:-32}
MCLIENTS=${BENCH_MERIDIAN_CLIENTS:-$CLIENTS}
SECONDS_RUN=${BENCH_SECONDS:-20}
RATE=${BENCH_RATE:-167}
ACCOUNTS=${BENCH_ACCOUNTS:-100000}
METADATA_BYTES=${BENCH_METADATA_BYTES:-5000}
SCALE=${BENCH_PGBENCH_SCALE:-10}
WARMUP=${BENCH_WARMUP_SECONDS:-2}
KEEP=${BENCH_KEEP:-0}
PGBENCH_ONLY=${BENCH_PGBENCH_ONLY:-0}
MERIDIAND_SETTINGS=${BENCH_MERIDIAND_SETTINGS:-}
PG_SETTINGS=${BENCH_PG_SETTINGS:-}
SEED=${BENCH_SEED:-$RANDOM}

MERIDIAND="$BUILD/meridiand"
MERIDIANCTL="$BUILD/meridianctl"
LOADGEN="$BUILD/bench/loadgen"

T0=$(date +%s)
phase() { printf '\n[bench %4ss] == %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
note() { printf '[bench %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

for n in CLIENTS MCLIENTS SECONDS_RUN ACCOUNTS METADATA_BYTES SCALE WARMUP; do
  [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, not '${!n}'"
done
[[ $RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "BENCH_RATE must be a number, not '$RATE'"
if [ -n "$PG_SETTINGS" ]; then
  IFS=, read -r -a kvs <<<"$PG_SETTINGS"
  for kv in "${kvs[@]}"; do
    [[ $kv =~ ^[a-z_0-9]+=[A-Za-z0-9_.-]+$ ]] \
      || die "BENCH_PG_SETTINGS: '$kv' is not key=value (value: letters, digits, . _ -)"
  done
fi
if [ "$PGBENCH_ONLY" != 1 ]; then
  for f in "$MERIDIAND" "$MERIDIANCTL" "$LOADGEN"; do
    [ -x "$f" ] || die "$f not found; build first (make build, or cmake --build $BUILD)"
  done
fi
command -v jq >/dev/null || die "jq not found; run scripts/install-deps.sh"
[ -x "$PGBIN/pgbench" ] || die "pgbench not found in $PGBIN; run scripts/install-deps.sh"

# --- Temporary instances, and their cleanup whatever happens.
mkdir -p "$ROOT/bench/out"
WORK=$(mktemp -d /tmp/meridian-bench.XXXXXX)
chmod 755 "$WORK" # the postgres user must reach its data directories
PRIMARY="$WORK/p1"
STANDBY="$WORK/s1"
MERIDIAND_PID=
CHILD_PID=
CHILD_GRACE_TENTHS=50 # how long cleanup waits for the child after SIGTERM

# Run a long command in the background and wait for it, so a signal to
# this script is handled at once (bash defers traps while a foreground
# child runs) and cleanup can stop the child by PID. Returns its status.
run_child() {
  "$@" &
  CHILD_PID=$!
  local rc=0
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=
  return "$rc"
}

save_logs() {
  local last="$ROOT/bench/out/last"
  rm -rf "$last" && mkdir -p "$last"
  cp "$WORK"/*.log "$WORK"/*.json "$last"/ 2>/dev/null || true
  if [ -f "$PRIMARY/postgres.log" ]; then cp "$PRIMARY/postgres.log" "$last/primary.log"; fi
  if [ -f "$STANDBY/postgres.log" ]; then cp "$STANDBY/postgres.log" "$last/standby.log"; fi
  if [ -d "$WORK/region" ]; then cp -r "$WORK/region" "$last/region"; fi
}

cleanup() {
  local rc=$?
  trap - EXIT
  # A second Ctrl-C must not cut short the stopping below (region.sh
  # takes a whole lab down).
  trap '' INT TERM
  if [ -n "$CHILD_PID" ] && kill -0 "$CHILD_PID" 2>/dev/null; then
    kill -TERM "$CHILD_PID" 2>/dev/null || true
    for _ in $(seq 1 "$CHILD_GRACE_TENTHS"); do kill -0 "$CHILD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CHILD_PID" 2>/dev/null || true
  fi
  if [ -n "$MERIDIAND_PID" ] && kill -0 "$MERIDIAND_PID" 2>/dev/null; then
    kill -TERM "$MERIDIAND_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$MERIDIAND_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$MERIDIAND_PID" 2>/dev/null; then
      echo "bench: meridiand (pid $MERIDIAND_PID) ignored SIGTERM for 10 s; SIGKILL" >&2
      kill -KILL "$MERIDIAND_PID" 2>/dev/null || true
    fi
    wait "$MERIDIAND_PID" 2>/dev/null || true
  fi
  "$PG" stop "$STANDBY" >/dev/null 2>&1 &
  "$PG" stop "$PRIMARY" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  save_logs
  if [ "$KEEP" = 1 ]; then
    echo "bench: kept $WORK (BENCH_KEEP=1); remove it when done" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

psql_p() { "$PG" psql "$PRIMARY" -qAt "$@"; }
psql_s() { "$PG" psql "$STANDBY" -qAt "$@"; }
# Before a measured phase: a checkpoint on the primary and, once the
# standby has replayed it, a restartpoint on the standby, so neither
# node writes out the previous phase's pages during the next one (a
# standby's restartpoint triggered by the closed loop's WAL ran through
# the open loop and its writes stalled the standby's WAL flushes).
checkpoint_both() {
  local db=${1:-postgres} lsn i
  psql_p -d "$db" -c CHECKPOINT >/dev/null
  lsn=$(psql_p -c "SELECT pg_current_wal_lsn()")
  for i in $(seq 1 300); do
    [ "$(psql_s -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" = t ] && break
    sleep 0.1
  done
  psql_s -c CHECKPOINT >/dev/null
}

# "events commits commit_seconds" from meridiand's /metrics (0s if absent),
# to report how well requests were batched into commits.
commit_stats() {
  curl -s --max-time 5 "$URL/metrics" | awk '
    $1 == "meridian_commit_events_sum" { e = $2 }
    $1 == "meridian_commit_events_count" { c = $2 }
    $1 == "meridian_commit_duration_seconds_sum" { s = $2 }
    END { printf "%d %d %.6f\n", e, c, s }' || echo "0 0 0"
}

free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12700 ))
    ss -ltnH "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
  done
  die "no free TCP port found"
}

# --- 1. PostgreSQL: primary + one synchronous standby.
phase "PostgreSQL 15 primary + synchronous standby in $WORK"
"$PG" init "$PRIMARY"
if [ -n "$PG_SETTINGS" ]; then
  # The standby is a copy of the primary (pg_basebackup): it gets them too.
  echo "# --- bench/run.sh: BENCH_PG_SETTINGS" >> "$PRIMARY/data/postgresql.conf"
  IFS=, read -r -a kvs <<<"$PG_SETTINGS"
  for kv in "${kvs[@]}"; do
    echo "${kv%%=*} = '${kv#*=}'" >> "$PRIMARY/data/postgresql.conf"
  done
  note "PostgreSQL settings added (primary and standby): $PG_SETTINGS"
fi
"$PG" start "$PRIMARY"
"$PG" standby "$STANDBY" "$PRIMARY" s1
"$PG" start "$STANDBY"
cat >> "$PRIMARY/data/postgresql.conf" <<EOF
# --- bench/run.sh: commits wait for the standby
synchronous_standby_names = 'ANY 1 (s1)'
synchronous_commit = on
EOF
psql_p -c "SELECT pg_reload_conf()" >/dev/null
sync_state=
for _ in $(seq 1 300); do
  sync_state=$(psql_p -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 's1'")
  [ "$sync_state" = quorum ] || [ "$sync_state" = sync ] && break
  sleep 0.1
done
[ "$sync_state" = quorum ] || [ "$sync_state" = sync ] \
  || die "standby s1 is not synchronous after 30 s (sync_state '${sync_state:-absent}'); see $STANDBY/postgres.log"
note "standby s1 streaming, sync_state=$sync_state, synchronous_commit=$(psql_p -c 'SHOW synchronous_commit')"

# --- 2. Baseline: pgbench TPC-B-like.
phase "pgbench: init scale $SCALE"
"$PG" createdb "$PRIMARY" pgbench
PGB=("$PGBIN/pgbench" -h 127.0.0.1 -p "$(sed -n 's/^PGPORT=//p' "$PRIMARY/env")" -U postgres)
run_child "${PGB[@]}" -i -q -s "$SCALE" pgbench >"$WORK/pgbench-init.log" 2>&1 \
  || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
checkpoint_both
phase "pgbench: TPC-B-like, $CLIENTS clients, $SECONDS_RUN s, prepared"
run_child "${PGB[@]}" -c "$CLIENTS" -j 2 -T "$SECONDS_RUN" -M prepared -P 5 pgbench \
  >"$WORK/pgbench.log" 2> >(tee "$WORK/pgbench-progress.log" >&2) \
  || { cat "$WORK/pgbench.log" >&2; die "pgbench failed"; }
cat "$WORK/pgbench.log" >&2
PGBENCH_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$WORK/pgbench.log")
PGBENCH_LAT_MS=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$WORK/pgbench.log")
PGBENCH_FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/pgbench.log")
[ -n "$PGBENCH_TPS" ] || die "could not read tps from pgbench output ($WORK/pgbench.log)"
note "pgbench: $PGBENCH_TPS tps, latency average $PGBENCH_LAT_MS ms"
if [ "$PGBENCH_ONLY" = 1 ]; then
  jq -cn --argjson pg "$PGBENCH_TPS" --argjson lat "${PGBENCH_LAT_MS:-null}" \
    --argjson clients "$CLIENTS" --argjson seconds "$SECONDS_RUN" --arg sync "$sync_state" \
    '{pgbench_tps: $pg, pgbench_latency_avg_ms: $lat, clients: $clients, seconds: $seconds, sync_state: $sync}'
  exit 0
fi

# --- 3. Meridian: fresh database, schema, config, key, server, accounts.
phase "meridiand: fresh database, migrate, config, API key"
"$PG" createdb "$PRIMARY" meridian
DSN=$("$PG" dsn "$PRIMARY" meridian)
"$MERIDIANCTL" --dsn "$DSN" db migrate >"$WORK/migrate.log" 2>&1 \
  || { cat "$WORK/migrate.log" >&2; die "meridianctl db migrate failed"; }
PORT=$(free_port)
CONF="$WORK/meridiand.conf"
"$MERIDIANCTL" config init --out "$CONF" --dsn "$DSN" --listen "127.0.0.1:$PORT" >"$WORK/config.log" 2>&1 \
  || { cat "$WORK/config.log" >&2; die "meridianctl config init failed"; }
KEY=$("$MERIDIANCTL" --config "$CONF" apikey create --customer bench --json 2>"$WORK/apikey.log" | jq -r '.key // empty') \
  || { cat "$WORK/apikey.log" >&2; die "meridianctl apikey create failed"; }
[ -n "$KEY" ] || { cat "$WORK/apikey.log" >&2; die "meridianctl apikey create printed no key"; }
URL="http://127.0.0.1:$PORT"
if [ -n "$MERIDIAND_SETTINGS" ]; then
  echo "# --- bench/run.sh: BENCH_MERIDIAND_SETTINGS" >>"$CONF"
  IFS=, read -r -a kvs <<<"$MERIDIAND_SETTINGS"
  for kv in "${kvs[@]}"; do
    [[ $kv =~ ^[a-z_0-9]+=[^=]+$ ]] || die "BENCH_MERIDIAND_SETTINGS: '$kv' is not key=value"
    echo "${kv%%=*} = ${kv#*=}" >>"$CONF"
  done
  note "meridiand settings: $MERIDIAND_SETTINGS"
fi

"$MERIDIAND" --config "$CONF" >"$WORK/meridiand.log" 2>&1 &
MERIDIAND_PID=$!
note "meridiand pid $MERIDIAND_PID on $URL; waiting for /readyz"
ready=0
for _ in $(seq 1 300); do
  kill -0 "$MERIDIAND_PID" 2>/dev/null || { tail -30 "$WORK/meridiand.log" >&2; die "meridiand exited during start-up (log above)"; }
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/readyz" || true)" = 200 ]; then
    ready=1; break
  fi
  sleep 0.1
done
[ "$ready" = 1 ] || { tail -30 "$WORK/meridiand.log" >&2; curl -s "$URL/readyz" >&2 || true; die "meridiand not ready after 30 s"; }

LG=("$LOADGEN" --url "$URL" --key "$KEY" --seed "$SEED" --accounts "$ACCOUNTS" --metadata-bytes "$METADATA_BYTES")
phase "meridiand: creating $ACCOUNTS accounts"
run_child "${LG[@]}" --create-accounts "$ACCOUNTS" >/dev/null || die "account creation failed (see above)"
checkpoint_both meridian

# --- 4. Closed loop, same number of clients as pgbench.
phase "loadgen closed loop: $MCLIENTS clients, ${WARMUP} s warm-up + $SECONDS_RUN s, 1 transfer/request, ~$METADATA_BYTES B metadata"
read -r EV0 CM0 CS0 < <(commit_stats)
set +e
run_child "${LG[@]}" --closed --clients "$MCLIENTS" --seconds "$SECONDS_RUN" --warmup-seconds "$WARMUP" --json >"$WORK/closed.json"
closed_rc=$?
set -e
[ "$closed_rc" = 0 ] || [ "$closed_rc" = 2 ] || die "loadgen --closed failed (exit $closed_rc)"
read -r EV1 CM1 CS1 < <(commit_stats)
COMMITS=$(( CM1 - CM0 ))
if [ "$COMMITS" -gt 0 ]; then
  EVENTS_PER_COMMIT=$(awk -v e=$(( EV1 - EV0 )) -v c="$COMMITS" 'BEGIN { printf "%.1f", e / c }')
  COMMIT_MS=$(awk -v s0="$CS0" -v s1="$CS1" -v c="$COMMITS" 'BEGIN { printf "%.2f", (s1 - s0) * 1000 / c }')
  note "closed loop: $COMMITS commits, $EVENTS_PER_COMMIT events/commit, $COMMIT_MS ms/commit on average (from /metrics)"
fi
kill -0 "$MERIDIAND_PID" 2>/dev/null || { tail -30 "$WORK/meridiand.log" >&2; die "meridiand died during the closed-loop run"; }

# --- 5. Open loop at the peak rate.
checkpoint_both meridian
phase "loadgen open loop: $RATE transfers/s for $SECONDS_RUN s"
set +e
run_child "${LG[@]}" --open --rate "$RATE" --seconds "$SECONDS_RUN" --json >"$WORK/open.json"
open_rc=$?
set -e
[ "$open_rc" = 0 ] || [ "$open_rc" = 2 ] || die "loadgen --open failed (exit $open_rc)"
kill -0 "$MERIDIAND_PID" 2>/dev/null || { tail -30 "$WORK/meridiand.log" >&2; die "meridiand died during the open-loop run"; }

sync_after=$(psql_p -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 's1'")

# --- Integrity: every "ok" answer is a committed row, and the books balance
# (sum of debits = sum of credits = sum of transfer amounts).
phase "integrity check"
read -r COMMITTED META_AVG BALANCED < <(psql_p -d meridian -F ' ' -c "
  SELECT (SELECT count(*) FROM transfers),
         (SELECT coalesce(round(avg(octet_length(metadata))), 0) FROM transfers),
         (SELECT sum(debits_posted) = sum(credits_posted)
                 AND sum(debits_posted) = (SELECT coalesce(sum(amount), 0) FROM transfers)
            FROM accounts)")
ACKED=$(jq -s '.[0].ok + .[0].warmup_ok + .[1].ok' "$WORK/closed.json" "$WORK/open.json")
note "transfers answered ok: $ACKED, rows committed: $COMMITTED, ledger balanced: $BALANCED, stored metadata avg $META_AVG B"

# --- 6. Report.
C=$(cat "$WORK/closed.json")
O=$(cat "$WORK/open.json")
RESULT=$(jq -cn --argjson c "$C" --argjson o "$O" \
  --argjson pg "$PGBENCH_TPS" --argjson pglat "${PGBENCH_LAT_MS:-null}" \
  --argjson pgfail "${PGBENCH_FAILED:-0}" \
  --arg msettings "$MERIDIAND_SETTINGS" --arg pgsettings "$PG_SETTINGS" \
  --argjson clients "$CLIENTS" --argjson mclients "$MCLIENTS" --argjson seconds "$SECONDS_RUN" --argjson rate "$RATE" \
  --argjson accounts "$ACCOUNTS" --argjson meta "$METADATA_BYTES" --argjson scale "$SCALE" \
  --arg sync "$sync_state" --arg sync_after "$sync_after" \
  --argjson committed "$COMMITTED" --argjson acked "$ACKED" --argjson meta_avg "$META_AVG" \
  --arg balanced "$BALANCED" \
  --argjson epc "${EVENTS_PER_COMMIT:-null}" --argjson cms "${COMMIT_MS:-null}" '
  ($c.transfers_per_s / $pg) as $ratio
  | (($committed >= $acked) and ($balanced == "t")) as $integrity
  | {transfers_per_s: $c.transfers_per_s, pgbench_tps: $pg,
     ratio: (($ratio * 100 | round) / 100),
     p50_ms: $c.p50_ms, p99_ms: $c.p99_ms, p999_ms: $c.p999_ms,
     p50_ms_at_peak: $o.p50_ms, p99_ms_at_peak: $o.p99_ms, p999_ms_at_peak: $o.p999_ms,
     peak_rate_per_s: $rate, peak_achieved_per_s: $o.transfers_per_s,
     clients: $clients, meridian_clients: $mclients, meridiand_settings: $msettings, pg_settings: $pgsettings, seconds: $seconds, accounts: $accounts, metadata_bytes: $meta,
     errors: ($c.errors + $o.errors), errors_closed: $c.errors, errors_peak: $o.errors,
     pgbench_latency_avg_ms: $pglat, pgbench_failed: $pgfail, pgbench_scale: $scale,
     sync_state: $sync, sync_state_after: $sync_after,
     transfers_acknowledged: $acked, transfers_committed: $committed,
     ledger_balanced: ($balanced == "t"), metadata_stored_avg_bytes: $meta_avg,
     integrity_ok: $integrity,
     events_per_commit: $epc, commit_ms_avg: $cms,
     aim_ratio_met: ($ratio >= 10), aim_p99_at_peak_met: ($o.p99_ms <= 20),
     flagged: ((($c.errors + $o.errors) > 0) or ($integrity | not))}')

# The drills and the lab bring up instances of their own: stop meridiand
# and the two PostgreSQL instances now (their logs stay for save_logs).
phase "stopping the single-region instances (meridiand, primary, standby)"
if [ -n "$MERIDIAND_PID" ] && kill -0 "$MERIDIAND_PID" 2>/dev/null; then
  kill -TERM "$MERIDIAND_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$MERIDIAND_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$MERIDIAND_PID" 2>/dev/null || true
  wait "$MERIDIAND_PID" 2>/dev/null || true
fi
MERIDIAND_PID=
"$PG" stop "$STANDBY" >/dev/null 2>&1 || true
"$PG" stop "$PRIMARY" >/dev/null 2>&1 || true

# --- 8. Failover drill (issue 3): the leader's node killed, DRILL_RUNS times,
# on a cell of its own; the drill takes it down and removes it.
DRILL_RUNS=${BENCH_DRILL_RUNS:-5}
[[ $DRILL_RUNS =~ ^[0-9]+$ ]] || die "BENCH_DRILL_RUNS must be a whole number, not '$DRILL_RUNS'"
DRILL_JSON=null
DRILL_NOTE=
if [ "$DRILL_RUNS" -eq 0 ]; then
  DRILL_NOTE="skipped (BENCH_DRILL_RUNS=0)"
elif [ ! -x "$BUILD/meridian-keeper" ]; then
  DRILL_NOTE="skipped: $BUILD/meridian-keeper not built"
else
  phase "failover drill: meridianctl drill node-loss --runs $DRILL_RUNS (etcd x3, 3 keepers, 2 meridiand)"
  export MERIDIAN_SOURCE_DIR="$ROOT" # where the drill finds scripts/cell.sh
  set +e
  run_child "$MERIDIANCTL" --json drill node-loss --runs "$DRILL_RUNS" \
    --report "$WORK/drill.json" >"$WORK/drill.out" 2> >(tee "$WORK/drill.log" >&2)
  drill_rc=$?
  set -e
  sed '$d' "$WORK/drill.out" >&2
  DRILL_LAST=$(tail -n 1 "$WORK/drill.out")
  # (jq 1.6 -e answers 0 to empty input: test for a line first.)
  if [ -n "$DRILL_LAST" ] && jq -e 'type == "object" and has("rto_s_median")' >/dev/null 2>&1 <<<"$DRILL_LAST"; then
    DRILL_JSON=$DRILL_LAST
    note "drill: exit $drill_rc, rto_s_median $(jq -r .rto_s_median <<<"$DRILL_JSON") s, rto_s_max $(jq -r .rto_s_max <<<"$DRILL_JSON") s, acked_lost $(jq -r .acked_lost <<<"$DRILL_JSON"), invariant_violations $(jq -r .invariant_violations <<<"$DRILL_JSON")"
  else
    DRILL_NOTE="failed: no JSON report (exit $drill_rc; see $WORK/drill.log)"
    note "drill $DRILL_NOTE"
  fi
fi
RESULT=$(jq -c --argjson d "$DRILL_JSON" --arg note "$DRILL_NOTE" --argjson runs "$DRILL_RUNS" '
  . + {rto_s_median: $d.rto_s_median, rto_s_max: $d.rto_s_max,
       acked_lost: $d.acked_lost, invariant_violations: $d.invariant_violations,
       detection_s_median: $d.detection_s_median, promotion_s_median: $d.promotion_s_median,
       drill_runs: $runs, drill_acked_total: $d.acked_total, drill_pass: $d.pass,
       drill_note: (if $note == "" then null else $note end),
       aim_rto_met: (if $d == null or $d.rto_s_median == null then null
                     else ($d.rto_s_median <= 3 and $d.rto_s_max <= 5 and $d.acked_lost == 0) end)}
  | .flagged = (.flagged or ($runs > 0 and .drill_pass != true))' <<<"$RESULT")

# --- 8b. No false failover under load (issue 3): the same cell timings
# while pgbench and one busy loop per core saturate the machine
# (bench/no-false-failover.sh); a fence, a new epoch or a leader change
# would be a false failover and flags the bench.
NFF_SECONDS=${BENCH_NFF_SECONDS:-60}
[[ $NFF_SECONDS =~ ^[0-9]+$ ]] || die "BENCH_NFF_SECONDS must be a whole number, not '$NFF_SECONDS'"
NFF_JSON=null
if [ "$NFF_SECONDS" -gt 0 ] && [ -x "$BUILD/meridian-keeper" ]; then
  phase "no false failover: ${NFF_SECONDS} s of pgbench + a busy loop per core on a cell of its own"
  export BENCH_LOAD_SECONDS=$NFF_SECONDS
  set +e
  run_child "$ROOT/bench/no-false-failover.sh" "$BUILD" \
    >"$WORK/nff.out" 2> >(tee "$WORK/nff.log" >&2)
  nff_rc=$?
  set -e
  sed '$d' "$WORK/nff.out" >&2
  NFF_LAST=$(tail -n 1 "$WORK/nff.out")
  if jq -e 'type == "object" and has("false_failovers")' >/dev/null 2>&1 <<<"$NFF_LAST"; then
    NFF_JSON=$NFF_LAST
  else
    note "no-false-failover: no JSON result (exit $nff_rc; see $WORK/nff.log)"
  fi
fi
RESULT=$(jq -c --argjson n "$NFF_JSON" --argjson secs "$NFF_SECONDS" '
  . + {nff_load_seconds: $secs, nff_false_failovers: $n.false_failovers,
       nff_fences: $n.fences, nff_epoch_changes: $n.epoch_changes,
       nff_lease_left_s_min: $n.lease_left_s_min, nff_pgbench_tps: $n.pgbench_tps}
  | .flagged = (.flagged or ($secs > 0 and $n != null and $n.false_failovers != 0))' <<<"$RESULT")

# --- 9-11. Multi-region (issue 4): bench/region.sh brings up the two-region
# lab for the DR lag at 10x peak and the global durability latency, takes
# it down, then runs the region-loss drill. Its last stdout line is its
# JSON object; it takes the lab down itself (by PID) whatever happens.
REGION_JSON=null
if [ "${BENCH_REGION:-1}" = 0 ]; then
  REGION_NOTE="skipped (BENCH_REGION=0)"
else
  phase "multi-region phases (bench/region.sh)"
  CHILD_GRACE_TENTHS=1800
  set +e
  BENCH_SEED=$SEED BENCH_SECONDS=$SECONDS_RUN BENCH_RATE=$RATE \
    BENCH_METADATA_BYTES=$METADATA_BYTES BENCH_REGION_OUT="$WORK/region" BENCH_REGION_QUIET_TABLE=1 \
    run_child "$ROOT/bench/region.sh" "$BUILD" >"$WORK/region.out"
  region_rc=$?
  set -e
  CHILD_GRACE_TENTHS=50
  REGION_LAST=$(tail -n 1 "$WORK/region.out" 2>/dev/null || true)
  if [ -n "$REGION_LAST" ] && jq -e 'type == "object" and has("lag_p99_ms_10x")' >/dev/null 2>&1 <<<"$REGION_LAST"; then
    REGION_JSON=$REGION_LAST
    REGION_NOTE=
  else
    REGION_NOTE="failed: bench/region.sh printed no result (exit $region_rc)"
    note "multi-region $REGION_NOTE"
  fi
fi
RESULT=$(jq -c --argjson r "$REGION_JSON" --arg note "${REGION_NOTE:-}" '
  if $r == null then
    . + {region_rto_s_median: null, region_acked_lost_max: null, lag_p99_ms_10x: null,
         global_durability_extra_ms: null, region_note: $note,
         region_flagged: ($note | startswith("failed"))}
  else . + $r end
  | .flagged = (.flagged or .region_flagged)' <<<"$RESULT")

{
  echo
  echo "Meridian benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, PostgreSQL 15 primary + 1 synchronous standby (sync_state $sync_state)"
  echo "$CLIENTS clients (pgbench) / $MCLIENTS (loadgen), $SECONDS_RUN s per run; Meridian: 1 transfer/request, ~$METADATA_BYTES B metadata, $ACCOUNTS accounts"
  echo
  jq -r '
    def f(x): if x == null then "-" else (x * 100 | round / 100 | tostring) end;
    ["", "pgbench TPC-B", "Meridian", "ratio / aim"],
    ["throughput (/s)", f(.pgbench_tps), f(.transfers_per_s),
       "\(f(.ratio))x (aim >= 10x: \(if .aim_ratio_met then "met" else "NOT met" end))"],
    ["latency avg/p50 (ms)", f(.pgbench_latency_avg_ms) + " avg", f(.p50_ms), ""],
    ["latency p99 (ms)", "-", f(.p99_ms), ""],
    ["latency p99.9 (ms)", "-", f(.p999_ms), ""],
    ["p99 at \(.peak_rate_per_s)/s (ms)", "-", f(.p99_ms_at_peak),
       "aim <= 20 ms: \(if .aim_p99_at_peak_met then "met" else "NOT met" end)"],
    ["transfers per commit", "1", f(.events_per_commit), "avg commit \(f(.commit_ms_avg)) ms"],
    ["errors", (.pgbench_failed | tostring), (.errors | tostring),
       (if .errors > 0 then "FLAGGED: results invalid" else "" end)],
    ["ok answers / rows committed", "-", "\(.transfers_acknowledged) / \(.transfers_committed)",
       (if .integrity_ok then "ledger balanced" else "FLAGGED: integrity check failed" end)]
    | @tsv' <<<"$RESULT" | column -t -s $'\t'
  jq -r 'def f(x): if x == null then "-" else (x * 1000 | round / 1000 | tostring) end;
    if .drill_runs == 0 or .drill_pass == null then
      "failover drill: \(.drill_note // "not run")"
    else
      "failover drill (node-loss x\(.drill_runs)): RTO median \(f(.rto_s_median)) s, max \(f(.rto_s_max)) s (aim <= 3 s / <= 5 s: \(if .aim_rto_met then "met" else "NOT met" end)); detection median \(f(.detection_s_median)) s; acked lost \(.acked_lost), invariant violations \(.invariant_violations)\(if .drill_pass then "" else "; FLAGGED: drill failed" end)"
    end,
    if .nff_false_failovers == null then
      "no false failover under load: \(if .nff_load_seconds == 0 then "skipped (BENCH_NFF_SECONDS=0)" else "no result" end)"
    else
      "no false failover under load (\(.nff_load_seconds) s, pgbench \(f(.nff_pgbench_tps)) tps + a busy loop per core): false failovers \(.nff_false_failovers), fences \(.nff_fences), epoch changes \(.nff_epoch_changes), least lease time left \(f(.nff_lease_left_s_min)) s\(if .nff_false_failovers == 0 then "" else "; FLAGGED" end)"
    end' <<<"$RESULT"
  echo
  if [ -n "$(jq -r '.region_note // empty' <<<"$RESULT")" ]; then
    echo "multi-region: $(jq -r .region_note <<<"$RESULT")"
  else
    "$ROOT/bench/region.sh" --table <<<"$RESULT"
  fi
  echo
}
echo "$RESULT" >"$WORK/result.json"
echo "$RESULT" >"$ROOT/bench/out/last.json"
if [ "$(jq -r .flagged <<<"$RESULT")" = true ]; then
  echo "bench: FLAGGED — $(jq -r .errors <<<"$RESULT") requests failed, integrity_ok=$(jq -r .integrity_ok <<<"$RESULT"), drill_pass=$(jq -r .drill_pass <<<"$RESULT"), region_flagged=$(jq -r .region_flagged <<<"$RESULT"); see bench/out/last/ for samples and logs" >&2
  echo "$RESULT"
  exit 3
fi
echo "$RESULT"
