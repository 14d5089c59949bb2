#!/usr/bin/env bash
# cell.sh — one Meridian cell on this machine: a 3-member etcd cluster,
# N PostgreSQL nodes each run by a meridian-keeper, the ledger schema,
# and M meridiand processes that follow the cell's leader. Used by
# `make run`, the failover tests and the drills.
#
# Everything lives under DIR and is tracked by PID files there; `down`
# stops every process by its PID (never by name). Ports are chosen free,
# below the ephemeral range, at `up` time.
#
# Usage:
#   cell.sh up DIR [--name CELL] [--nodes N] [--meridiand M] [--build BUILD_DIR]
#                  [--lease-ttl-s S] [--region R] [--netem]
#                  --netem: each keeper reaches etcd through its own links of a
#                  meridian-netem proxy, so one node can be cut off from etcd
#   cell.sh down DIR
#   cell.sh leader DIR                 print the leader's node name (empty: none)
#   cell.sh wait-healthy DIR [SECONDS] wait for a leader with N-1 synchronous standbys
#   cell.sh kill-node DIR NODE         SIGKILL the node's keeper and postmaster
#   cell.sh kill-db DIR NODE           SIGKILL the node's postmaster only
#   cell.sh stop-node DIR NODE         stop keeper (SIGTERM) and PostgreSQL (fast)
#   cell.sh start-node DIR NODE        start the node's keeper again
#   cell.sh pause-node DIR NODE        SIGSTOP keeper, postmaster and backends
#   cell.sh resume-node DIR NODE       SIGCONT them
#   cell.sh isolate DIR NODE           black-hole NODE's links to etcd (needs --netem)
#   cell.sh heal DIR NODE              let NODE's etcd traffic pass again
#   cell.sh psql DIR NODE [args...]    psql to NODE's ledger database
#   cell.sh env DIR                    print DIR/env
#
# DIR/env: CELL ETCD_ENDPOINTS NODES="n1 n2 n3" N1_PG_PORT=... N1_METRICS_PORT=... BUILD
#          CONFIG (meridiand/meridianctl config) MERIDIAND_URLS (comma-separated)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PSQL=/usr/lib/postgresql/15/bin/psql

die() { echo "cell.sh: $*" >&2; exit 1; }
log() { echo "cell.sh: $*" >&2; }

chosen=" "
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12700 ))
    case "$chosen" in *" $p "*) continue ;; esac
    if ! ss -ltnH "sport = :$p" 2>/dev/null | grep -q .; then
      chosen="$chosen$p "
      echo "$p"; return 0
    fi
  done
  die "no free port found"
}

load_env() {
  [ -f "$1/env" ] || die "$1 holds no cell (no env file); run: cell.sh up $1"
  # shellcheck disable=SC1091
  . "$1/env"
}

upper() { echo "$1" | tr '[:lower:]' '[:upper:]'; }
pg_port() { local v; v="$(upper "$1")_PG_PORT"; echo "${!v:?unknown node $1}"; }
metrics_port() { local v; v="$(upper "$1")_METRICS_PORT"; echo "${!v:?unknown node $1}"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -f "$1" ] && head -1 "$1" || true; }

leader_of() {
  bash "$here/etcd.sh" ctl "$1/etcd" get --print-value-only "/meridian/$CELL/leader" 2>/dev/null |
    sed -n 's/.*"node":"\([^"]*\)".*/\1/p'
}

sql_node() {
  local dir=$1 node=$2; shift 2
  "$PSQL" -h 127.0.0.1 -p "$(pg_port "$node")" -U postgres -d meridian -XtAq "$@" 2>/dev/null
}

# The etcd endpoints a node's keeper uses: direct, or its netem links.
keeper_etcd() {
  local node=$1 v
  v="$(upper "$node")_ETCD"
  echo "${!v:-$ETCD_ENDPOINTS}"
}

netem_links() { # node -> JSON array of its link names
  local node=$1 out="" j
  for j in $(seq 1 3); do out="$out,\"$node-e$j\""; done
  echo "[${out#,}]"
}

netem_mode() { # dir node mode
  [ -n "${NETEM_CONTROL:-}" ] || die "this cell has no netem proxy: bring it up with --netem"
  curl -sf -X POST "http://127.0.0.1:$NETEM_CONTROL/links" -H 'Content-Type: application/json' \
    -d "{\"names\":$(netem_links "$2"),\"mode\":\"$3\"}" >/dev/null ||
    die "netem did not accept mode $3 for $2 (control port $NETEM_CONTROL)"
}

start_keeper() {
  local dir=$1 node=$2 i=${2#n}
  "$BUILD/meridian-keeper" --node "$node" --cell "$CELL" --etcd "$(keeper_etcd "$node")" \
    --dir "$dir/$node" --pg-port "$(pg_port "$node")" --zone "az$i" --region "$REGION" \
    --lease-ttl-s "$LEASE_TTL_S" --pid-file "$dir/$node.keeper.pid" \
    --metrics-listen "127.0.0.1:$(metrics_port "$node")" \
    >>"$dir/$node.keeper.log" 2>&1 &
  for _ in $(seq 1 50); do [ -s "$dir/$node.keeper.pid" ] && return 0; sleep 0.1; done
  die "keeper $node did not start (see $dir/$node.keeper.log)"
}

wait_healthy() {
  local dir=$1 limit=${2:-90} want l n
  n=$(echo "$NODES" | wc -w)
  want=$((n - 1))
  for _ in $(seq 1 $((limit * 2))); do
    l=$(leader_of "$dir")
    if [ -n "$l" ] && [ "$(sql_node "$dir" "$l" -c "SELECT pg_is_in_recovery()")" = "f" ] &&
       [ "$(sql_node "$dir" "$l" -c "SELECT count(*) FROM pg_stat_replication WHERE state='streaming' AND sync_state IN ('quorum','sync')")" = "$want" ]; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

postmaster_pid() { local f="$1/$2/data/postmaster.pid"; [ -f "$f" ] && head -1 "$f" || true; }

cmd=${1:-}; shift || true
case "$cmd" in
up)
  dir=$(realpath -m "${1:?usage: cell.sh up DIR [options]}"); shift
  CELL=c1 NODES_N=3 MERIDIAND_N=1 BUILD="$root/build" LEASE_TTL_S=2 REGION=us-east NETEM=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) CELL=$2; shift 2 ;;
      --nodes) NODES_N=$2; shift 2 ;;
      --meridiand) MERIDIAND_N=$2; shift 2 ;;
      --build) BUILD=$(realpath "$2"); shift 2 ;;
      --lease-ttl-s) LEASE_TTL_S=$2; shift 2 ;;
      --region) REGION=$2; shift 2 ;;
      --netem) NETEM=1; shift ;;
      *) die "unknown option $1 (see the usage at the top of $0)" ;;
    esac
  done
  [[ "$NODES_N" =~ ^[1-8]$ ]] || die "--nodes wants 1..8"
  [[ "$MERIDIAND_N" =~ ^[0-8]$ ]] || die "--meridiand wants 0..8"
  [[ "$CELL" =~ ^[a-z0-9_-]{1,31}$ ]] || die "--name wants [a-z0-9_-]{1,31}"
  for b in meridian-keeper meridiand meridianctl; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b missing: build first (make build) or pass --build DIR"
  done
  [ -e "$dir/env" ] && die "$dir already holds a cell; run: cell.sh down $dir (and remove it)"
  mkdir -p "$dir"
  chmod 755 "$dir"
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
    die "the postgres user cannot reach $dir; use a directory under /tmp or /var/tmp"
  fi

  log "starting etcd (3 members)"
  # etcd.sh start retries on other ports itself when a probed port was
  # taken before etcd bound it.
  bash "$here/etcd.sh" init "$dir/etcd" 3 >/dev/null
  bash "$here/etcd.sh" start "$dir/etcd" >/dev/null 2>"$dir/etcd.start.log" \
    || { cat "$dir/etcd.start.log" >&2; die "etcd did not start"; }
  ETCD_ENDPOINTS=$(bash "$here/etcd.sh" endpoints "$dir/etcd")
  NODES=""
  {
    echo "CELL=$CELL"
    echo "ETCD_ENDPOINTS=$ETCD_ENDPOINTS"
    echo "BUILD=$BUILD"
    echo "LEASE_TTL_S=$LEASE_TTL_S"
    echo "REGION=$REGION"
    for i in $(seq 1 "$NODES_N"); do
      echo "N${i}_PG_PORT=$(free_port)"
      echo "N${i}_METRICS_PORT=$(free_port)"
      NODES="$NODES n$i"
    done
    echo "NODES=\"${NODES# }\""
    echo "CONFIG=$dir/meridiand.conf"
  } > "$dir/env"
  load_env "$dir"

  if [ "$NETEM" = 1 ]; then
    [ -x "$BUILD/meridian-netem" ] || die "$BUILD/meridian-netem missing: build first"
    # The proxy picks its own free ports (port 0) and prints them as one
    # JSON line: no window in which another process could take them.
    args=()
    IFS=, read -r -a eps <<< "$ETCD_ENDPOINTS"
    for n in $NODES; do
      for j in 1 2 3; do
        args+=(--link "$n-e$j=0:${eps[$((j - 1))]##*:},delay_ms=0,jitter_ms=0")
      done
    done
    "$BUILD/meridian-netem" --control "127.0.0.1:0" "${args[@]}" \
      --pid-file "$dir/netem.pid" >"$dir/netem.out" 2>"$dir/netem.log" &
    echo "$!" > "$dir/netem.pid.launch"
    for _ in $(seq 1 100); do [ -s "$dir/netem.out" ] && break; sleep 0.1; done
    ports=$(head -1 "$dir/netem.out")
    ctl_port=$(jq -r '.control // empty' <<<"$ports" 2>/dev/null || true)
    [ -n "$ctl_port" ] || die "meridian-netem did not start (see $dir/netem.log)"
    for n in $NODES; do
      list=""
      for j in 1 2 3; do list="$list,http://127.0.0.1:$(jq -r ".links[\"$n-e$j\"]" <<<"$ports")"; done
      echo "$(upper "$n")_ETCD=${list#,}" >> "$dir/env"
    done
    echo "NETEM_CONTROL=$ctl_port" >> "$dir/env"
    curl -sf "http://127.0.0.1:$ctl_port/healthz" >/dev/null || die "meridian-netem does not answer (see $dir/netem.log)"
    load_env "$dir"
    log "keepers reach etcd through meridian-netem (control port $ctl_port)"
  fi

  log "starting keepers: $NODES"
  for n in $NODES; do start_keeper "$dir" "$n"; done
  wait_healthy "$dir" 120 || die "the cell did not become healthy within 120 s (logs: $dir/*.keeper.log)"
  L=$(leader_of "$dir")
  log "leader $L; applying the ledger schema"
  "$BUILD/meridianctl" config init --out "$dir/meridiand.conf" \
    --dsn "host=127.0.0.1 port=$(pg_port "$L") user=postgres dbname=meridian" \
    --listen "127.0.0.1:$(free_port)" >/dev/null
  {
    echo "etcd = $ETCD_ENDPOINTS"
    echo "cell = $CELL"
  } >> "$dir/meridiand.conf"
  "$BUILD/meridianctl" --dsn "host=127.0.0.1 port=$(pg_port "$L") user=postgres dbname=meridian" \
    db migrate >/dev/null

  urls=""
  for i in $(seq 1 "$MERIDIAND_N"); do
    port=$(free_port)
    "$BUILD/meridiand" --config "$dir/meridiand.conf" --listen "127.0.0.1:$port" \
      --pid-file "$dir/meridiand$i.pid" >>"$dir/meridiand$i.log" 2>&1 &
    echo "$!" > "$dir/meridiand$i.pid.launch"
    urls="$urls,http://127.0.0.1:$port"
  done
  echo "MERIDIAND_URLS=${urls#,}" >> "$dir/env"
  for u in ${urls//,/ }; do
    for _ in $(seq 1 100); do
      curl -sf "$u/readyz" >/dev/null 2>&1 && break
      sleep 0.2
    done
    curl -sf "$u/readyz" >/dev/null 2>&1 || die "meridiand at $u not ready (see $dir/meridiand*.log)"
  done
  log "cell $CELL up: leader $L, etcd $ETCD_ENDPOINTS${urls:+, meridiand ${urls#,}}"
  ;;
down)
  dir=$(realpath -m "${1:?usage: cell.sh down DIR}")
  [ -f "$dir/env" ] || exit 0
  load_env "$dir"
  for f in "$dir"/meridiand*.pid.launch "$dir"/*.keeper.pid; do
    [ -f "$f" ] || continue
    p=$(pid_of "$f")
    alive "$p" && kill -CONT "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null || true
  done
  for f in "$dir"/meridiand*.pid.launch "$dir"/*.keeper.pid; do
    [ -f "$f" ] || continue
    p=$(pid_of "$f")
    for _ in $(seq 1 100); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -KILL "$p" 2>/dev/null || true
    rm -f "$f"
  done
  for n in $NODES; do
    pm=$(postmaster_pid "$dir" "$n")
    if alive "$pm"; then
      kill -CONT "$pm" $(pgrep -P "$pm" 2>/dev/null) 2>/dev/null || true
      bash "$here/pg.sh" stop "$dir/$n" >/dev/null 2>&1 || true
    fi
  done
  bash "$here/etcd.sh" stop "$dir/etcd" >/dev/null 2>&1 || true
  if [ -f "$dir/netem.pid.launch" ]; then
    p=$(pid_of "$dir/netem.pid.launch")
    alive "$p" && kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -KILL "$p" 2>/dev/null || true
    rm -f "$dir/netem.pid.launch"
  fi
  log "cell $CELL down"
  ;;
leader)
  dir=$(realpath "${1:?usage: cell.sh leader DIR}")
  load_env "$dir"
  leader_of "$dir"
  ;;
wait-healthy)
  dir=$(realpath "${1:?usage: cell.sh wait-healthy DIR [SECONDS]}")
  load_env "$dir"
  wait_healthy "$dir" "${2:-90}"
  ;;
kill-node)
  dir=$(realpath "${1:?}"); node=${2:?usage: cell.sh kill-node DIR NODE}
  load_env "$dir"; pg_port "$node" >/dev/null
  k=$(pid_of "$dir/$node.keeper.pid"); pm=$(postmaster_pid "$dir" "$node")
  alive "$k" && kill -KILL "$k" || true
  alive "$pm" && kill -KILL "$pm" || true
  rm -f "$dir/$node.keeper.pid"
  ;;
kill-db)
  dir=$(realpath "${1:?}"); node=${2:?usage: cell.sh kill-db DIR NODE}
  load_env "$dir"; pg_port "$node" >/dev/null
  pm=$(postmaster_pid "$dir" "$node")
  alive "$pm" || die "PostgreSQL of $node is not running"
  kill -KILL "$pm"
  ;;
stop-node)
  dir=$(realpath "${1:?}"); node=${2:?usage: cell.sh stop-node DIR NODE}
  load_env "$dir"; pg_port "$node" >/dev/null
  k=$(pid_of "$dir/$node.keeper.pid")
  if alive "$k"; then
    kill -TERM "$k"
    for _ in $(seq 1 100); do alive "$k" || break; sleep 0.1; done
  fi
  rm -f "$dir/$node.keeper.pid"
  bash "$here/pg.sh" stop "$dir/$node" >/dev/null 2>&1 || true
  ;;
start-node)
  dir=$(realpath "${1:?}"); node=${2:?usage: cell.sh start-node DIR NODE}
  load_env "$dir"; pg_port "$node" >/dev/null
  alive "$(pid_of "$dir/$node.keeper.pid")" && die "keeper $node is already running"
  start_keeper "$dir" "$node"
  ;;
pause-node|resume-node)
  dir=$(realpath "${1:?}"); node=${2:?usage: cell.sh $cmd DIR NODE}
  load_env "$dir"; pg_port "$node" >/dev/null
  sig=STOP; [ "$cmd" = resume-node ] && sig=CONT
  k=$(pid_of "$dir/$node.keeper.pid"); pm=$(postmaster_pid "$dir" "$node")
  pids="$k $pm $( [ -n "$pm" ] && pgrep -P "$pm" | tr '\n' ' ' )"
  # shellcheck disable=SC2086
  kill -"$sig" $pids 2>/dev/null || true
  ;;
isolate|heal)
  dir=$(realpath "${1:?}"); node=${2:?usage: cell.sh $cmd DIR NODE}
  load_env "$dir"; pg_port "$node" >/dev/null
  mode=blackhole; [ "$cmd" = heal ] && mode=pass
  netem_mode "$dir" "$node" "$mode"
  ;;
psql)
  dir=$(realpath "${1:?}"); node=${2:?usage: cell.sh psql DIR NODE [args]}; shift 2
  load_env "$dir"
  "$PSQL" -h 127.0.0.1 -p "$(pg_port "$node")" -U postgres -d meridian -X "$@"
  ;;
env)
  dir=$(realpath "${1:?usage: cell.sh env DIR}")
  cat "$dir/env"
  ;;
*)
  sed -n '2,26p' "$0" >&2
  exit 2
  ;;
esac
