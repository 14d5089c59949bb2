#!/usr/bin/env bash
# etcd.sh — start and stop private etcd 3.4 clusters for tests, the local
# lab and the benchmarks (Meridian's consensus store, like Patroni's DCS).
#
# Same conventions as scripts/pg.sh: every cluster lives in its own
# directory, every member listens on 127.0.0.1 on free ports chosen at
# init time (so two runs or a leftover never collide), and members are
# stopped by the PID recorded in DIR/<name>.pid, never by name. A PID is
# only signalled after checking that the process is the etcd serving that
# member's data directory (PIDs get reused).
#
# DIR/env (plain shell assignments, read by this script and by tests):
#   ETCD_ENDPOINTS=http://127.0.0.1:P1,...   client URLs of all members
#   MEMBERS="e1 e2 e3"                       member names
#   E1_CLIENT_PORT=... E1_PEER_PORT=...      per member (name upper-cased)
#   INITIAL_CLUSTER=e1=http://127.0.0.1:Q1,...
#   CLUSTER_TOKEN=...                        unique per DIR
#   HEARTBEAT_MS=100 ELECTION_MS=1000        raft timing
# Only ETCD_ENDPOINTS starts with ETCD_: etcd reads ETCD_* variables as
# flags, so the members are started with every ETCD_* variable removed.
#
# Usage:
#   etcd.sh init DIR [N]           N members e1..eN (default 3), not started.
#                                  Raft timing from MERIDIAN_ETCD_HEARTBEAT_MS and
#                                  MERIDIAN_ETCD_ELECTION_MS (default 100 / 1000).
#   etcd.sh start DIR [MEMBER]     start all members (or one) in the background and
#                                  wait until every running member reports healthy
#                                  (at most MERIDIAN_ETCD_START_TIMEOUT_S, default 30);
#                                  a cluster never up before (no DIR/started) whose
#                                  port was taken meanwhile gets new ports in DIR/env
#   etcd.sh stop DIR [MEMBER]      SIGTERM by PID, wait, SIGKILL fallback (idempotent)
#   etcd.sh kill DIR MEMBER        SIGKILL one member by PID (fault injection)
#   etcd.sh endpoints DIR          print the comma-separated client URLs
#   etcd.sh leader DIR             print the name of the current raft leader
#                                  (exit 1 when the running members have none)
#   etcd.sh ctl DIR [args...]      etcdctl against all members
set -euo pipefail

ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
[ -x "$ETCD_BIN" ] || { echo "etcd.sh: etcd not found at $ETCD_BIN; run scripts/install-deps.sh (package etcd-server)" >&2; exit 1; }

die() { echo "etcd.sh: $*" >&2; exit 1; }

MAX_MEMBERS=9
CHOSEN_PORTS=" "

# Ports below Linux's ephemeral range (32768-60999): a port in that range
# can be taken at any moment by an outgoing connection's local end.
# Sets PORT (not printed: a $(...) subshell would lose CHOSEN_PORTS,
# which keeps one init from handing the same port out twice).
free_port() {
  local p i
  for i in $(seq 1 100); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12700 ))
    case "$CHOSEN_PORTS" in *" $p "*) continue ;; esac
    if ! ss -ltnH "sport = :$p" 2>/dev/null | grep -q .; then
      CHOSEN_PORTS="$CHOSEN_PORTS$p "
      PORT=$p; return 0
    fi
  done
  die "no free TCP port found in 20000-32699 after 100 tries"
}

load_env() {
  local dir=$1
  [ -f "$dir/env" ] || die "$dir is not initialised (no env file); run etcd.sh init first"
  # shellcheck disable=SC1091
  . "$dir/env"
}

upper() { echo "$1" | tr '[:lower:]' '[:upper:]'; }
client_port() { local v; v="$(upper "$1")_CLIENT_PORT"; echo "${!v:?no client port for member $1}"; }
peer_port() { local v; v="$(upper "$1")_PEER_PORT"; echo "${!v:?no peer port for member $1}"; }

check_member() {
  case " $MEMBERS " in *" $1 "*) ;; *) die "no member '$1' in this cluster (members: $MEMBERS)" ;; esac
}

# Print the PID of a member if it is alive and really is the etcd that
# serves DIR/<name>.etcd; print nothing otherwise.
member_pid() {
  local dir=$1 name=$2 pid
  [ -f "$dir/$name.pid" ] || return 0
  pid=$(head -1 "$dir/$name.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--data-dir $dir/$name.etcd "; then
    echo "$pid"
  fi
}

wait_gone() {
  local pid=$1 tenths=$2 i
  for i in $(seq 1 "$tenths"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  return 1
}

# Words to put before etcd's command line: nice -10 and the best-effort
# I/O class's highest level when running as root, nothing otherwise.
etcd_priority() {
  # ionice -t: run anyway where the I/O class cannot be set (containers).
  if [ "$(id -u)" = 0 ]; then echo "nice -n -10 ionice -t -c2 -n0"; fi
}

start_member() {
  local dir=$1 name=$2 cport pport
  if [ -n "$(member_pid "$dir" "$name")" ]; then return 0; fi
  cport=$(client_port "$name"); pport=$(peer_port "$name")
  local hb=${MERIDIAN_ETCD_HEARTBEAT_MS:-${HEARTBEAT_MS:-100}}
  local el=${MERIDIAN_ETCD_ELECTION_MS:-${ELECTION_MS:-1000}}
  local unset_args=() v
  for v in $(compgen -e); do
    case "$v" in ETCD_*|ETCDCTL_*) unset_args+=(-u "$v") ;; esac
  done
  # The trailing --log-outputs keeps "--data-dir DIR " followed by a space
  # in /proc/PID/cmdline, which member_pid relies on. etcd runs ahead of
  # the workload for the CPU (and the disk, where the scheduler has
  # classes) when we may raise it: a starved member misses heartbeats,
  # calls an election, and the keepers' lease renewals fail meanwhile.
  env "${unset_args[@]}" $(etcd_priority) "$ETCD_BIN" \
    --name "$name" \
    --data-dir "$dir/$name.etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" \
    --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "$INITIAL_CLUSTER" \
    --initial-cluster-state new \
    --initial-cluster-token "$CLUSTER_TOKEN" \
    --heartbeat-interval "$hb" \
    --election-timeout "$el" \
    --logger zap --log-outputs stderr \
    >>"$dir/$name.log" 2>&1 </dev/null &
  local pid=$! i
  echo "$pid" > "$dir/$name.pid"
  # Until the forked shell has exec'd etcd, /proc/PID/cmdline is this
  # script's and member_pid would take the member for dead: wait for the
  # exec (or the exit), at most 5 s.
  for i in $(seq 1 500); do
    [ -n "$(member_pid "$dir" "$name")" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.01
  done
}

# Returns 1 with EXITED set to the member's name when a member exits
# during start; dies when the cluster is not healthy in time.
wait_healthy() {
  local dir=$1 deadline name pid eps ok
  EXITED=""
  deadline=$(( $(date +%s) + ${MERIDIAN_ETCD_START_TIMEOUT_S:-30} ))
  while :; do
    eps=""; ok=1
    for name in $MEMBERS; do
      [ -f "$dir/$name.pid" ] || continue
      pid=$(member_pid "$dir" "$name")
      if [ -z "$pid" ]; then
        EXITED=$name
        return 1
      fi
      eps="$eps${eps:+,}http://127.0.0.1:$(client_port "$name")"
    done
    [ -n "$eps" ] || return 0
    "$ETCDCTL_BIN" --endpoints "$eps" --dial-timeout 1s --command-timeout 2s \
      endpoint health >/dev/null 2>&1 || ok=0
    [ "$ok" -eq 1 ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      "$ETCDCTL_BIN" --endpoints "$eps" --dial-timeout 1s --command-timeout 2s endpoint health >&2 || true
      die "etcd cluster in $dir not healthy after ${MERIDIAN_ETCD_START_TIMEOUT_S:-30} s (logs: $dir/*.log)"
    fi
    sleep 0.2
  done
}

stop_member() {
  local dir=$1 name=$2 pid
  pid=$(member_pid "$dir" "$name")
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 100; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 50 || die "etcd member $name (PID $pid) survived SIGKILL"
    fi
  fi
  rm -f "$dir/$name.pid"
}

# Choose ports for N members and write DIR/env (see the header).
write_env() {
  local dir=$1 n=$2 hb=$3 el=$4 i name cp pp members="" endpoints="" cluster="" ports="" token
  for i in $(seq 1 "$n"); do
    name="e$i"; free_port; cp=$PORT; free_port; pp=$PORT
    members="$members${members:+ }$name"
    endpoints="$endpoints${endpoints:+,}http://127.0.0.1:$cp"
    cluster="$cluster${cluster:+,}$name=http://127.0.0.1:$pp"
    ports="$ports$(upper "$name")_CLIENT_PORT=$cp"$'\n'"$(upper "$name")_PEER_PORT=$pp"$'\n'
  done
  token="meridian-$(printf '%s' "$dir" | sha256sum | cut -c1-12)-$(date +%s)-$RANDOM"
  {
    echo "ETCD_ENDPOINTS=$endpoints"
    echo "MEMBERS=\"$members\""
    printf '%s' "$ports"
    echo "INITIAL_CLUSTER=$cluster"
    echo "CLUSTER_TOKEN=$token"
    echo "HEARTBEAT_MS=$hb"
    echo "ELECTION_MS=$el"
  } > "$dir/env"
}

# Whether a member's log says, after byte offset $3, that a port was taken.
port_taken_since() {
  [ -f "$1/$2.log" ] && tail -c "+$(( $3 + 1 ))" "$1/$2.log" | grep -q "address already in use"
}

# Start every member of DIR and wait until the cluster is healthy. A port
# probed free at init can be taken by another process before etcd binds
# it: while the cluster has never been up (no DIR/started), start afresh
# on new ports, a few times. Any other failure is fatal.
start_all() {
  local dir=$1 attempt name n hb el taken
  local -A logsize
  for attempt in 1 2 3 4; do
    for name in $MEMBERS; do
      logsize[$name]=$(stat -c %s "$dir/$name.log" 2>/dev/null || echo 0)
      start_member "$dir" "$name"
    done
    if wait_healthy "$dir"; then : > "$dir/started"; return 0; fi
    taken=0
    for name in $MEMBERS; do
      port_taken_since "$dir" "$name" "${logsize[$name]}" && taken=1
    done
    if [ "$attempt" -lt 4 ] && [ ! -e "$dir/started" ] && [ "$taken" = 1 ]; then
      echo "etcd.sh: a port chosen for $dir was taken meanwhile; starting on other ports" >&2
      for name in $MEMBERS; do stop_member "$dir" "$name"; done
      for name in $MEMBERS; do
        rm -rf "${dir:?}/$name.etcd"; mv -f "$dir/$name.log" "$dir/$name.log.$attempt" 2>/dev/null || true
      done
      n=$(echo "$MEMBERS" | wc -w); hb=$HEARTBEAT_MS; el=$ELECTION_MS
      write_env "$dir" "$n" "$hb" "$el"
      load_env "$dir"
      continue
    fi
    tail -20 "$dir/$EXITED.log" >&2 || true
    die "etcd member $EXITED in $dir exited during start (log above: $dir/$EXITED.log)"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
init)
  dir=$(realpath -m "${1:?usage: etcd.sh init DIR [N]}")
  n=${2:-3}
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$MAX_MEMBERS" ] \
    || die "member count must be 1..$MAX_MEMBERS, got '$n'"
  [ -e "$dir/env" ] && die "$dir already holds a cluster; stop and remove it first"
  mkdir -p "$dir"; chmod 700 "$dir"
  hb=${MERIDIAN_ETCD_HEARTBEAT_MS:-100}; el=${MERIDIAN_ETCD_ELECTION_MS:-1000}
  [[ "$hb" =~ ^[0-9]+$ && "$el" =~ ^[0-9]+$ ]] || die "heartbeat/election must be integers (ms)"
  [ "$el" -ge $(( 5 * hb )) ] || die "election timeout ($el ms) must be at least 5x the heartbeat ($hb ms)"
  write_env "$dir" "$n" "$hb" "$el"
  ;;
start)
  dir=$(realpath "${1:?usage: etcd.sh start DIR [MEMBER]}")
  load_env "$dir"
  if [ -n "${2:-}" ]; then
    check_member "$2"; start_member "$dir" "$2"
    wait_healthy "$dir" || {
      tail -20 "$dir/$EXITED.log" >&2 || true
      die "etcd member $EXITED in $dir exited during start (log above: $dir/$EXITED.log)"
    }
    : > "$dir/started"
  else
    start_all "$dir"
  fi
  ;;
stop)
  dir=$(realpath -m "${1:?usage: etcd.sh stop DIR [MEMBER]}")
  [ -f "$dir/env" ] || exit 0
  load_env "$dir"
  if [ -n "${2:-}" ]; then
    check_member "$2"; stop_member "$dir" "$2"
  else
    for name in $MEMBERS; do stop_member "$dir" "$name"; done
  fi
  ;;
kill)
  dir=$(realpath "${1:?usage: etcd.sh kill DIR MEMBER}")
  name=${2:?usage: etcd.sh kill DIR MEMBER}
  load_env "$dir"; check_member "$name"
  pid=$(member_pid "$dir" "$name")
  [ -n "$pid" ] || die "etcd member $name in $dir is not running"
  kill -KILL "$pid"
  wait_gone "$pid" 50 || die "etcd member $name (PID $pid) survived SIGKILL"
  rm -f "$dir/$name.pid"
  ;;
endpoints)
  dir=$(realpath "${1:?usage: etcd.sh endpoints DIR}")
  load_env "$dir"
  echo "$ETCD_ENDPOINTS"
  ;;
leader)
  dir=$(realpath "${1:?usage: etcd.sh leader DIR}")
  load_env "$dir"
  eps=""
  for name in $MEMBERS; do
    [ -n "$(member_pid "$dir" "$name")" ] && eps="$eps${eps:+,}http://127.0.0.1:$(client_port "$name")"
  done
  [ -n "$eps" ] || die "no member of $dir is running"
  # Simple output: "URL, ID, VERSION, DB SIZE, IS LEADER, ..." per member.
  url=$(env -u ETCD_ENDPOINTS "$ETCDCTL_BIN" --endpoints "$eps" --dial-timeout 1s \
          --command-timeout 2s endpoint status 2>/dev/null \
        | awk -F', ' '$5 == "true" { print $1; exit }') || true
  [ -n "$url" ] || die "no raft leader among the running members of $dir"
  for name in $MEMBERS; do
    if [ "$url" = "http://127.0.0.1:$(client_port "$name")" ]; then echo "$name"; exit 0; fi
  done
  die "leader $url is not a member of $dir"
  ;;
ctl)
  dir=$(realpath "${1:?usage: etcd.sh ctl DIR [args]}"); shift
  load_env "$dir"
  env -u ETCD_ENDPOINTS "$ETCDCTL_BIN" --endpoints "$ETCD_ENDPOINTS" "$@"
  ;;
*)
  sed -n '2,36p' "$0" >&2
  exit 2
  ;;
esac
