#!/usr/bin/env bash
# lab-follow.sh — the lab's follower (issue 4 items 5 and 8; docs/LAB.md
# "The follower"). `lab.sh up` starts it, records it in DIR/procs like any
# other process, and `lab down` stops it by PID first (before HAProxy and
# meridiand, so it cannot start anything during the shutdown).
#
# Every LAB_FOLLOW_INTERVAL_MS (default 400, at most 500) it reads each
# cell's leader key /meridian/<cell>/leader from etcd (one curl to the v3
# JSON gateway for all cells; the endpoint that answered last is tried
# first, a dead or frozen one costs at most 2 s before the next is tried)
# and, for a cell whose leader is in another region than the one the
# global entry weights:
#   1. moves the global HAProxy's weight for the cell to the leader's
#      region (`set server cell_<c>/<region> weight 100`, the others 0)
#      through its admin socket: runtime API only, never a reload, so no
#      connection is dropped. The regional HAProxies keep forwarding a cell
#      they do not serve to the global entry, and meridiand checks the
#      epoch on every commit, so nothing is ever written to a stale primary;
#   2. scales meridiand up in that region to the topology's `scale_to`:
#      starts the instances lab.sh planned at `up` (ports allocated, command
#      lines in DIR/scale/, servers declared `disabled` in the region's
#      HAProxy), recording each in DIR/procs and DIR/cmd before it starts,
#      and enables its server through the region's admin socket once its
#      /readyz answers.
# Each action is appended to DIR/events.jsonl (one JSON object per line:
# time, kind, cell, region, ...), which `lab status --json` shows.
# Every 10 rounds it re-applies the weights and enabled servers (all
# idempotent), so a restarted HAProxy is brought back in line.
#
# Usage: lab-follow.sh --dir DIR --pid-file FILE
# Needs: curl, jq, socat (scripts/install-deps.sh).
set -uo pipefail

DIR=""
PID_FILE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=${2:?--dir needs a directory}; shift 2 ;;
    --pid-file) PID_FILE=${2:?--pid-file needs a file}; shift 2 ;;
    *) echo "lab-follow: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$DIR" ] && [ -f "$DIR/env" ] || { echo "lab-follow: no lab in '$DIR' (no env file)" >&2; exit 2; }
for b in curl jq socat; do
  command -v "$b" >/dev/null || { echo "lab-follow: $b missing: run scripts/install-deps.sh" >&2; exit 2; }
done
# shellcheck disable=SC1091
. "$DIR/env"
[ -n "$PID_FILE" ] && echo "$$" > "$PID_FILE"

INTERVAL_MS=${LAB_FOLLOW_INTERVAL_MS:-400}
[[ "$INTERVAL_MS" =~ ^[0-9]+$ ]] && [ "$INTERVAL_MS" -ge 50 ] && [ "$INTERVAL_MS" -le 500 ] || INTERVAL_MS=400
INTERVAL_S=$(printf '0.%03d' "$INTERVAL_MS")
[ "$INTERVAL_MS" -ge 500 ] && INTERVAL_S=0.5
READY_TIMEOUT_MS=60000   # a scaled-up instance that is not ready by then is reported
MAX_ROUNDS=20000000      # bounds the main loop (~90 days at 400 ms)
MAX_LINES=256            # bounds every table read below

log() { printf '%s lab-follow: %s\n' "$(date -u +%FT%T.%3NZ)" "$*"; }
SLOW_LOGGED=0
slow_log() { # at most 20 such lines per minute: the log stays readable on a loaded machine
  local m=$(( ${EPOCHSECONDS:-0} / 60 ))
  [ "$m" = "${SLOW_MIN:-}" ] || { SLOW_MIN=$m; SLOW_LOGGED=0; }
  SLOW_LOGGED=$((SLOW_LOGGED + 1))
  [ "$SLOW_LOGGED" -le 20 ] && log "$*"
  return 0
}
now_ms() { local t=${EPOCHREALTIME/./}; echo $(( t / 1000 )); }
iso_now() { date -u +%FT%T.%3NZ; }
event() { # JSON object body (without braces) -> DIR/events.jsonl
  printf '{"time":"%s",%s}\n' "$(iso_now)" "$1" >> "$DIR/events.jsonl"
}

# ---- the lab's tables
declare -A NODE_REGION CELL_REGIONS SERVES INST_CELL INST_REGION INST_PORT INST_STATE INST_T0
CELLS_LIST=${CELLS:-}
while IFS=$'\t' read -r n _c r _; do NODE_REGION[$n]=$r; done < <(head -n "$MAX_LINES" "$DIR/nodes.tsv")
# Regions serving each cell, home first (the order of the global backend).
while read -r c r _ _; do
  [ -n "${SERVES[$c/$r]:-}" ] && continue
  SERVES[$c/$r]=1
  CELL_REGIONS[$c]="${CELL_REGIONS[$c]:-} $r"
done < <(head -n "$MAX_LINES" "$DIR/meridiand.list")
SCALE_NAMES=""
if [ -f "$DIR/scale.list" ]; then
  while read -r c r name port; do
    [ -n "$name" ] || continue
    INST_CELL[$name]=$c; INST_REGION[$name]=$r; INST_PORT[$name]=$port; INST_STATE[$name]=idle
    SCALE_NAMES="$SCALE_NAMES $name"
  done < <(head -n "$MAX_LINES" "$DIR/scale.list")
fi
# A planned instance already running (the follower was restarted with
# `lab fault restart follower`) is not started twice: it is enabled once ready.
inst_pid() { # NAME: its PID when alive and ours (command line names DIR/)
  local f p
  for f in "$DIR/pids/$1.pid" "$DIR/pids/$1.launch"; do
    [ -f "$f" ] || continue
    p=$(head -1 "$f" 2>/dev/null | tr -dc 0-9)
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
      tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$DIR/" && { echo "$p"; return 0; }
  done
  return 0
}
for name in $SCALE_NAMES; do
  if [ -n "$(inst_pid "$name")" ]; then INST_STATE[$name]=starting; INST_T0[$name]=$(( ${EPOCHREALTIME/./} / 1000 )); fi
done
IFS=',' read -r -a ENDPOINTS <<<"${ETCD_DIRECT:?DIR/env has no ETCD_DIRECT}"
EP=0

# ---- admin sockets
admin() { # SOCKET_NAME COMMANDS: prints HAProxy's answer; fails when the socket does not answer
  local sock="$DIR/haproxy/$1.sock"
  [ -S "$sock" ] || return 1
  printf '%s\n' "$2" | socat -t 1 -T 2 - "UNIX-CONNECT:$sock" 2>/dev/null
}
admin_ok() { # SOCKET_NAME COMMANDS: succeeds when every command was accepted (empty answers)
  local out
  out=$(admin "$1" "$2") || return 1
  [ -z "${out//[[:space:]]/}" ] || { log "haproxy-$1 answered to '$2': $(echo $out)"; return 1; }
}

# ---- leaders
declare -A PAYLOAD
for c in $CELLS_LIST; do
  # Serializable: the member answers from its own copy, without a raft round
  # trip across the WAN (a routing hint may be a heartbeat late; meridiand
  # checks the epoch on every commit anyway).
  PAYLOAD[$c]="{\"key\":\"$(printf '/meridian/%s/leader' "$c" | base64 -w0)\",\"serializable\":true}"
done
RAW_PREV=""
KVS_RE='"kvs":\[[^]]*\]'
declare -A L_NODE L_REGION L_EPOCH
fetch_leaders() { # sets L_NODE/L_REGION/L_EPOCH; fails when no etcd endpoint answered
  local tries raw ep c args stripped rest k parsed n=0 want
  want=$(echo $CELLS_LIST | wc -w)
  for ((tries = 0; tries < ${#ENDPOINTS[@]}; tries++)); do
    ep=${ENDPOINTS[$EP]}
    args=()
    for c in $CELLS_LIST; do
      [ ${#args[@]} -gt 0 ] && args+=(--next)
      args+=(-sf --connect-timeout 1 --max-time 2 -X POST -H 'Content-Type: application/json' -d "${PAYLOAD[$c]}" "$ep/v3/kv/range")
    done
    local t0 rc el
    t0=$(now_ms)
    raw=$(curl "${args[@]}" 2>/dev/null); rc=$?
    el=$(( $(now_ms) - t0 ))
    [ "$el" -gt 1000 ] && slow_log "etcd $ep answered in $el ms (curl exit $rc)"
    if [ "$rc" = 0 ] && [ -n "$raw" ]; then
      # The header (member id, revision) changes with every write anywhere
      # in etcd; the leader keys rarely. Parse only when they changed: the
      # "kvs" arrays (key, revisions, value) say whether they did.
      stripped=""; rest=$raw
      for ((k = 0; k < 64; k++)); do
        [[ $rest =~ $KVS_RE ]] || break
        stripped+="${BASH_REMATCH[0]}|"
        rest=${rest#*"${BASH_REMATCH[0]}"}
      done
      [ "$stripped" = "$RAW_PREV" ] && return 0
      parsed=$(jq -r '((.kvs // [])[0].value // "" | @base64d) as $v
                      | ($v | fromjson? // {}) | [.node // "", .region // "", (.epoch // "" | tostring)] | @tsv' <<<"$raw" 2>/dev/null)
      n=$(printf '%s\n' "$parsed" | grep -c '')
      if [ "$n" = "$want" ]; then
        local node region epoch
        for c in $CELLS_LIST; do
          IFS=$'\t' read -r node region epoch
          [ -z "$region" ] && [ -n "$node" ] && region=${NODE_REGION[$node]:-}
          L_NODE[$c]=$node; L_REGION[$c]=$region; L_EPOCH[$c]=$epoch
        done <<<"$parsed"
        RAW_PREV=$stripped
        return 0
      fi
    fi
    slow_log "etcd $ep: no usable answer (curl exit $rc, $el ms): trying the next endpoint"
    EP=$(( (EP + 1) % ${#ENDPOINTS[@]} ))
  done
  return 1
}

# ---- actions
declare -A APPLIED          # cell -> region the global entry weights
route_to() { # CELL REGION: weight 100 on REGION's server, 0 on the others
  local c=$1 region=$2 r w cmds=""
  for r in ${CELL_REGIONS[$c]:-}; do
    w=0; [ "$r" = "$region" ] && w=100
    cmds="$cmds${cmds:+; }set server cell_$c/$r weight $w"
  done
  admin_ok global "$cmds"
}

record_route() { # CELL REGION EPOCH FROM: /meridian/<cell>/routing/<epoch> in etcd, for
  # `meridianctl history` (the routing switch of that failover); best effort.
  local c=$1 region=$2 epoch=$3 from=$4 key value
  [[ "$epoch" =~ ^[0-9]+$ ]] || return 0
  key=$(printf '/meridian/%s/routing/%020d' "$c" "$epoch" | base64 -w0)
  value=$(printf '{"region":"%s","from":"%s","at_ms":%s}' "$region" "$from" "$(now_ms)" | base64 -w0)
  curl -sf --connect-timeout 1 --max-time 2 -X POST -H 'Content-Type: application/json' \
    -d "{\"key\":\"$key\",\"value\":\"$value\"}" "${ENDPOINTS[$EP]}/v3/kv/put" >/dev/null 2>&1 ||
    log "cell $c: could not record the routing switch of epoch $epoch in etcd"
}

scale_up() { # CELL REGION: start the planned instances that are idle
  local c=$1 region=$2 name started="" count=0 total
  for name in $SCALE_NAMES; do
    [ "${INST_CELL[$name]}" = "$c" ] && [ "${INST_REGION[$name]}" = "$region" ] || continue
    [ "${INST_STATE[$name]}" = idle ] || continue
    local cmdf="$DIR/scale/$name.cmd"
    [ -f "$cmdf" ] || { log "no command line $cmdf for $name"; continue; }
    # Recorded before it starts: `lab down` finds it even if we die now.
    cp "$cmdf" "$DIR/cmd/$name"
    grep -q "^$name|" "$DIR/procs" || echo "$name|meridiand|$region||$c|$DIR/pids/$name.pid" >> "$DIR/procs"
    setsid bash -c "exec $(cat "$cmdf")" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
    echo "$!" > "$DIR/pids/$name.launch"
    INST_STATE[$name]=starting; INST_T0[$name]=$(now_ms)
    started="$started${started:+,}\"$name\""
    count=$((count + 1))
    log "cell $c: leader in $region: started $name (pid $!, port ${INST_PORT[$name]})"
  done
  [ "$count" -gt 0 ] || return 0
  total=$(awk -v c="$c" -v r="$region" '$1 == c && $2 == r' "$DIR/meridiand.list" | wc -l)
  total=$((total + $(for name in $SCALE_NAMES; do
    [ "${INST_CELL[$name]}" = "$c" ] && [ "${INST_REGION[$name]}" = "$region" ] && [ "${INST_STATE[$name]}" != idle ] && echo x
  done | wc -l)))
  event "\"kind\":\"scale-up\",\"cell\":\"$c\",\"region\":\"$region\",\"instances\":$total,\"started\":[$started],\"detail\":\"leader ${L_NODE[$c]:-} epoch ${L_EPOCH[$c]:-}: $count more meridiand\""
}

check_starting() { # enable the started instances whose /readyz answers
  local name code el
  for name in $SCALE_NAMES; do
    [ "${INST_STATE[$name]}" = starting ] || continue
    el=$(( $(now_ms) - INST_T0[$name] ))
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 0.3 "http://127.0.0.1:${INST_PORT[$name]}/readyz" 2>/dev/null)
    if [ "$code" = 200 ]; then
      if admin_ok "${INST_REGION[$name]}" "set server cell_${INST_CELL[$name]}/$name state ready"; then
        INST_STATE[$name]=ready
        log "$name ready after $el ms: enabled in haproxy-${INST_REGION[$name]}"
        event "\"kind\":\"scale-up-ready\",\"cell\":\"${INST_CELL[$name]}\",\"region\":\"${INST_REGION[$name]}\",\"instance\":\"$name\",\"ready_after_ms\":$el"
      fi
    elif [ "$el" -gt "$READY_TIMEOUT_MS" ]; then
      INST_STATE[$name]=failed
      log "$name not ready after $el ms (see logs/$name.log)"
      event "\"kind\":\"scale-up-failed\",\"cell\":\"${INST_CELL[$name]}\",\"region\":\"${INST_REGION[$name]}\",\"instance\":\"$name\",\"detail\":\"no /readyz after $el ms\""
    fi
  done
}

reapply() { # idempotent: weights and enabled servers, for restarted HAProxies
  local c name
  for c in "${!APPLIED[@]}"; do route_to "$c" "${APPLIED[$c]}" >/dev/null 2>&1 || true; done
  for name in $SCALE_NAMES; do
    [ "${INST_STATE[$name]}" = ready ] || continue
    admin "${INST_REGION[$name]}" "set server cell_${INST_CELL[$name]}/$name state ready" >/dev/null 2>&1 || true
  done
}

# ---- main loop
stop=0
trap 'stop=1' TERM INT
# Sleep without forking sleep(1) every round: read with a timeout from a
# pipe nobody writes to (a signal interrupts it at once).
exec {SLEEP_FD}<> <(:)
log "following cells: $CELLS_LIST (every $INTERVAL_MS ms; etcd $ETCD_DIRECT)"
etcd_down_logged=0
for ((round = 0; round < MAX_ROUNDS && stop == 0; round++)); do
  round_t0=$(now_ms)
  [ -f "$DIR/env" ] || { log "the lab is down (no $DIR/env)"; break; }
  if fetch_leaders; then
    etcd_down_logged=0
    for c in $CELLS_LIST; do
      region=${L_REGION[$c]:-}
      [ -n "$region" ] || continue              # no leader now: keep the last route
      [ "${APPLIED[$c]:-}" = "$region" ] && continue
      if [ -z "${SERVES[$c/$region]:-}" ]; then
        [ "${APPLIED[$c]:-}" = "-$region" ] || log "cell $c: leader ${L_NODE[$c]} in $region, where no meridiand serves it: route unchanged"
        APPLIED[$c]="-$region"
        continue
      fi
      t0=$(now_ms)
      if route_to "$c" "$region"; then
        from=${APPLIED[$c]:-}
        APPLIED[$c]=$region
        log "cell $c: leader ${L_NODE[$c]} (epoch ${L_EPOCH[$c]}) in $region: global entry -> $region (was ${from:-unset}; $(( $(now_ms) - t0 )) ms)"
        event "\"kind\":\"route\",\"cell\":\"$c\",\"region\":\"$region\",\"leader\":\"${L_NODE[$c]}\",\"epoch\":\"${L_EPOCH[$c]}\",\"from\":\"${from#-}\""
        record_route "$c" "$region" "${L_EPOCH[$c]}" "${from#-}"
      fi
      scale_up "$c" "$region"
    done
  elif [ "$etcd_down_logged" = 0 ]; then
    log "no etcd endpoint answers ($ETCD_DIRECT): routes unchanged"
    etcd_down_logged=1
  fi
  check_starting
  [ $((round % 10)) = 9 ] && reapply
  round_ms=$(( $(now_ms) - round_t0 ))
  [ "$round_ms" -gt 1500 ] && slow_log "round $round took $round_ms ms (machine loaded?)"
  read -r -t "$INTERVAL_S" -u "$SLEEP_FD" _ || true
done
log "stopping"
exit 0
