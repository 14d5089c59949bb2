#!/usr/bin/env bash
# no-false-failover.sh BUILD_DIR — do the keeper's timings hold on a
# loaded machine? Runs a three-node cell (scripts/cell.sh) and, for
# BENCH_LOAD_SECONDS (default 60), saturates both cores: pgbench with 16
# clients writing through the synchronous standbys plus one busy loop
# per core. A false failover would show as a new epoch, a fence, or a
# change of leader. Prints a summary and, as its last line, one JSON
# object: {"load_seconds", "pgbench_tps", "epoch_changes", "fences",
# "leader_changes", "lease_left_s_min", "false_failovers"}.
set -euo pipefail

build=$(realpath "${1:?usage: no-false-failover.sh BUILD_DIR}")
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${BENCH_LOAD_SECONDS:-60}
PGBIN=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/meridian-nff-XXXXXX)
chmod 755 "$work"
cell="$work/cell"
burners=()

cleanup() {
  for p in "${burners[@]}"; do kill "$p" 2>/dev/null || true; done
  bash "$root/scripts/cell.sh" down "$cell" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "no-false-failover: starting a three-node cell" >&2
bash "$root/scripts/cell.sh" up "$cell" --name nff --meridiand 0 --build "$build" 2>"$work/up.log" ||
  { cat "$work/up.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$cell/env"
leader=$(bash "$root/scripts/cell.sh" leader "$cell")
lport_var="N${leader#n}_PG_PORT"
lport=${!lport_var}
epoch0=$(bash "$root/scripts/etcd.sh" ctl "$cell/etcd" get --print-value-only /meridian/nff/epoch)

"$PGBIN/pgbench" -h 127.0.0.1 -p "$lport" -U postgres -i -s 5 -q meridian >/dev/null 2>&1

metric() { # node metric -> value
  local v="N${1#n}_METRICS_PORT"
  curl -sf "http://127.0.0.1:${!v}/metrics" | awk -v m="$2" '$1 ~ "^"m"[{ ]" {print $2}'
}

for _ in $(seq 1 "$(nproc)"); do
  ( end=$((SECONDS + seconds)); while [ $SECONDS -lt $end ]; do :; done ) &
  burners+=($!)
done
echo "no-false-failover: ${seconds} s of pgbench (16 clients, synchronous commit) + $(nproc) busy loops" >&2
"$PGBIN/pgbench" -h 127.0.0.1 -p "$lport" -U postgres -c 16 -j 2 -T "$seconds" -P 10 meridian \
  >"$work/pgbench.out" 2>"$work/pgbench.err" &
pgb=$!
lease_min=999
leader_changes=0
last_leader=$leader
while kill -0 "$pgb" 2>/dev/null; do
  l=$(bash "$root/scripts/cell.sh" leader "$cell" || true)
  if [ -n "$l" ] && [ "$l" != "$last_leader" ]; then leader_changes=$((leader_changes + 1)); last_leader=$l; fi
  left=$(metric "$last_leader" meridian_keeper_lease_left_seconds || true)
  if [ -n "$left" ] && [ "$(echo "$left < $lease_min" | bc)" = 1 ]; then lease_min=$left; fi
  sleep 0.5
done
wait "$pgb" || true
for p in "${burners[@]}"; do kill "$p" 2>/dev/null || true; done
burners=()

tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench.out" | head -1)
epoch1=$(bash "$root/scripts/etcd.sh" ctl "$cell/etcd" get --print-value-only /meridian/nff/epoch)
fences=0
for n in $NODES; do
  f=$(metric "$n" meridian_keeper_fences_total || echo 0)
  fences=$((fences + ${f:-0}))
done
epoch_changes=$((epoch1 - epoch0))
false_failovers=$((epoch_changes > 0 || fences > 0 || leader_changes > 0 ? 1 : 0))

printf '\n%-28s %s\n' "load" "${seconds} s, pgbench 16 clients + $(nproc) busy loops"
printf '%-28s %s\n' "pgbench tps under load" "${tps:-?}"
printf '%-28s %s\n' "epoch changes" "$epoch_changes"
printf '%-28s %s\n' "fences" "$fences"
printf '%-28s %s\n' "leader changes" "$leader_changes"
printf '%-28s %s s (lease TTL %s s, fence margin 0.7 s)\n' "lowest lease time left" "$lease_min" "$LEASE_TTL_S"
printf '{"load_seconds":%s,"pgbench_tps":%s,"epoch_changes":%s,"fences":%s,"leader_changes":%s,"lease_left_s_min":%s,"false_failovers":%s}\n' \
  "$seconds" "${tps:-null}" "$epoch_changes" "$fences" "$leader_changes" "$lease_min" "$false_failovers"
[ "$false_failovers" = 0 ]
