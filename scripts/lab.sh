#!/usr/bin/env bash
# lab.sh — the multi-region lab on one machine (`meridianctl lab ...`,
# issue 4 item 2; docs/LAB.md). Driven by a topology file (jq), it starts
# on 127.0.0.1 only, and tracks by PID under DIR:
#   - one meridian-netem carrying every link that crosses regions (etcd
#     peer traffic, keepers' and meridiand's etcd traffic to members in
#     other regions, PostgreSQL links for consumers in other regions), with
#     the topology's WAN delay and jitter;
#   - etcd, one member per topology member (raft timing raised for WAN RTT);
#   - per cell: its nodes (PostgreSQL run by meridian-keeper), the ledger
#     schema, meridiand instances per region following the cell's leader;
#   - HAProxy per region and a global entry; lab-follow.sh (tracked like the
#     rest) points the entry at each cell's leader region, scales up there.
# Several cells share the one etcd cluster (keys /meridian/<cell>/...).
#
# Usage:
#   lab.sh up [--topology FILE] [--dir DIR]
#   lab.sh down [--dir DIR]
#   lab.sh status [--dir DIR] [--json]
#   lab.sh fault [--dir DIR] KIND ARGS...
#       node-kill NODE          SIGKILL the node's keeper and postmaster
#       db-crash NODE           SIGKILL the node's postmaster only
#       zone-loss REGION ZONE   node-kill every node (and etcd member) of the zone
#       region-loss REGION      kill nodes, meridiand, HAProxy and etcd of the region
#       db-loss CELL REGION     node-kill every node of CELL in REGION (etcd,
#                               meridiand and HAProxy stay)
#       partition REGION        cut REGION off from every other region
#       etcd-majority-loss KEEP_REGION  freeze every etcd member outside KEEP_REGION
#       heal                    every link passes, frozen etcd members resume
#                               (undoes partition and etcd-majority-loss)
#       wan-delay MS [JITTER]   one-way delay (and jitter) of every WAN link
#       restart NAME            start a killed process again (names: lab.sh status)
#   lab.sh dsn [--dir DIR] CELL      libpq DSN of the cell's current leader
#   lab.sh env [--dir DIR]           print DIR/env
#   lab.sh dir [--dir DIR]           print the lab's directory (the default: .lab/ ...)
#
# DIR defaults to .lab at the repository root, or /var/tmp/meridian-lab-<hash>
# when the postgres user cannot reach the checkout. Binaries come from
# $MERIDIAN_BIN_DIR (meridianctl sets it to its own directory), else build/.
# Tunables (environment): LAB_LEASE_TTL_S (keeper lease, default 6),
# LAB_ETCD_HEARTBEAT_MS / LAB_ETCD_ELECTION_MS (default 250 / 2500).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
HAPROXY_BIN=${HAPROXY_BIN:-/usr/sbin/haproxy}
MAX_PROCS=256 # every loop over processes, links, nodes is bounded by this

die() { echo "lab: $*" >&2; exit 1; }
say() { printf 'lab: %s\n' "$*" >&2; }
t0=$(date +%s)
step() { printf 'lab: [%3ss] %s\n' "$(( $(date +%s) - t0 ))" "$*" >&2; }

# ---------------------------------------------------------------- helpers

default_dir() {
  local d="$root/.lab"
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$root" 2>/dev/null; then
    d="/var/tmp/meridian-lab-$(printf %s "$root" | sha256sum | cut -c1-12)"
  fi
  echo "$d"
}

# Shell-safe variable name for an object name: us-n1 -> US_N1.
vn() { echo "$1" | tr '[:lower:]-.' '[:upper:]__'; }
setv() { printf -v "$1" '%s' "$2"; printf '%s=%q\n' "$1" "$2" >> "$DIR/env"; }
getv() { local v="$1"; echo "${!v:-}"; }

# Ports below the ephemeral range (32768+), free now, never handed out twice.
CHOSEN=" "
PORT_NEXT=0
LISTENING=""
alloc_port() { # VAR [FIXED]: sets VAR (and records it in DIR/env)
  local var=$1 fixed=${2:-auto} p i
  # Asked afresh each time: another lab or test on this machine may have
  # bound ports since the last call (the ports are bound later, so a
  # narrow race remains; the two runs pick at random among 12,700).
  LISTENING=" $(ss -ltnH 2>/dev/null | awk '{ n = split($4, a, ":"); printf "%s ", a[n] }') "
  if [[ "$fixed" =~ ^[0-9]+$ ]] && [ "$fixed" -gt 0 ]; then
    case "$LISTENING$CHOSEN" in *" $fixed "*) die "port $fixed (for $var) is taken" ;; esac
    CHOSEN="$CHOSEN$fixed "; setv "$var" "$fixed"; return 0
  fi
  for ((i = 0; i < 2000; i++)); do
    if [ "$PORT_NEXT" -gt 0 ]; then
      p=$PORT_NEXT; PORT_NEXT=$((PORT_NEXT + 1))
    else
      p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12700 ))
    fi
    case "$LISTENING$CHOSEN" in *" $p "*) continue ;; esac
    CHOSEN="$CHOSEN$p "; setv "$var" "$p"; return 0
  done
  die "no free TCP port found"
}

T() { jq -r "$@" "$DIR/topology.json"; }

# The topology flattened once into tab-separated tables (jq is slow to
# start on a loaded machine; awk lookups are cheap):
#   nodes.tsv    NAME CELL REGION ZONE ROLE PG_PORT KEEPER_PORT
#   members.tsv  NAME REGION ZONE CLIENT_PORT PEER_PORT
#   cells.tsv    NAME HOME_REGION
#   md.tsv       CELL REGION INSTANCES PORT SCALE_TO
#   wan.tsv      REGION_A REGION_B ONE_WAY_DELAY_MS JITTER_MS
#   regions.txt  NAME
flatten() {
  T '.cells[] as $c | $c.nodes[] | [.name, $c.name, .region, .zone, .role, (.pg_port // "auto" | tostring), (.keeper_port // "auto" | tostring)] | @tsv' > "$DIR/nodes.tsv"
  T '.etcd.members[] | [.name, .region, .zone, (.client_port // "auto" | tostring), (.peer_port // "auto" | tostring)] | @tsv' > "$DIR/members.tsv"
  T '.cells[] | [.name, .home_region] | @tsv' > "$DIR/cells.tsv"
  T '.cells[] as $c | ($c.meridiand // [])[] | [$c.name, .region, (.instances // 1 | tostring), (.port // "auto" | tostring), ([.scale_to // 0, .instances // 1] | max | tostring)] | @tsv' > "$DIR/md.tsv"
  T '.wan[]? | [.between[0], .between[1], (.one_way_delay_ms // 40 | tostring), (.jitter_ms // 0 | tostring)] | @tsv' > "$DIR/wan.tsv"
  T '.regions[].name' > "$DIR/regions.txt"
}
col() { # FILE KEYCOL KEY OUTCOL: OUTCOL of the rows whose KEYCOL is KEY
  awk -F'\t' -v k="$3" -v a="$2" -v b="$4" '$a == k { print $b }' "$DIR/$1"
}
# The tables in bash arrays, so hot lookups fork nothing.
declare -A NODE_F MEMBER_F WAN_F HOME_F
load_tables() {
  local n c r z role pg kp m cp pp a b d j
  while IFS=$'\t' read -r n c r z role pg kp; do
    NODE_F[$n.cell]=$c; NODE_F[$n.region]=$r; NODE_F[$n.zone]=$z; NODE_F[$n.role]=$role
    NODE_F[$n.pg_port]=$pg; NODE_F[$n.keeper_port]=$kp
  done < "$DIR/nodes.tsv"
  while IFS=$'\t' read -r m r z cp pp; do
    MEMBER_F[$m.region]=$r; MEMBER_F[$m.zone]=$z; MEMBER_F[$m.client_port]=$cp; MEMBER_F[$m.peer_port]=$pp
  done < "$DIR/members.tsv"
  while IFS=$'\t' read -r a b d j; do WAN_F[$a/$b]="$d $j"; WAN_F[$b/$a]="$d $j"; done < "$DIR/wan.tsv"
  while IFS=$'\t' read -r c r; do HOME_F[$c]=$r; done < "$DIR/cells.tsv"
}
node_field() { echo "${NODE_F[$1.$2]:-}"; } # NODE cell|region|zone|role|pg_port|keeper_port
node_cell() { node_field "$1" cell; }
member_field() { echo "${MEMBER_F[$1.$2]:-}"; } # MEMBER region|zone|client_port|peer_port
cell_nodes() { col nodes.tsv 2 "$1" 1; }
home_of() { echo "${HOME_F[$1]:-}"; }

# "DELAY JITTER" of the WAN between two regions (default 40 ms, 0).
wan_of() { echo "${WAN_F[$1/$2]:-40 0}"; }

alive() { [ -n "${1:-}" ] && [[ "$1" =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null; }

# PID of a recorded process, only if alive and really ours (its command
# line names DIR: PIDs get reused).
proc_pid() { # pidfile
  local f=$1 p
  [ -f "$f" ] || return 0
  p=$(head -1 "$f" 2>/dev/null | tr -dc 0-9)
  alive "$p" || return 0
  tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$DIR/" || return 0
  echo "$p"
}

load() {
  [ -f "$DIR/env" ] || die "$DIR holds no lab (no env file); run: meridianctl lab up"
  # shellcheck disable=SC1091
  . "$DIR/env"
  load_tables
}

# DIR/procs: NAME|KIND|REGION|ZONE|CELL|PIDFILE, one line per process.
add_proc() { echo "$1|$2|$3|$4|$5|$6" >> "$DIR/procs"; }

# Launch a recorded command in the background (stdin, stdout and stderr
# detached so no caller's pipe is held open), remember it for `restart`.
launch() { # NAME LOG CMD...
  local name=$1 log=$2; shift 2
  printf '%q ' "$@" > "$DIR/cmd/$name"
  echo >> "$DIR/cmd/$name"
  setsid "$@" </dev/null >>"$log" 2>&1 &
  echo "$!" > "$DIR/pids/$name.launch"
}

etcd_direct() { echo "$ETCD_DIRECT"; }
etcdctl_() { env -u ETCD_ENDPOINTS "$ETCDCTL_BIN" --endpoints "$ETCD_DIRECT" --dial-timeout 1s --command-timeout 2s "$@"; }
leader_json() { etcdctl_ get --print-value-only "/meridian/$1/leader" 2>/dev/null | head -1; }
leader_node() { leader_json "$1" | jq -r '.node // empty' 2>/dev/null || true; }
cell_epoch() { etcdctl_ get --print-value-only "/meridian/$1/epoch" 2>/dev/null | head -1; }
pg_port_of() { getv "PG_$(vn "$1")"; }
sql_at() { local port=$1; shift; "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d meridian -XtAq "$@" 2>/dev/null; }
postmaster_pid() { proc_pid "$DIR/nodes/$1/data/postmaster.pid"; }

stop_pid() { # PID SIGNAL TENTHS: signal, wait, SIGKILL fallback
  local p=$1 sig=$2 n=$3
  alive "$p" || return 0
  kill -CONT "$p" 2>/dev/null || true
  kill -"$sig" "$p" 2>/dev/null || true
  for _ in $(seq 1 "$n"); do alive "$p" || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  for _ in $(seq 1 30); do alive "$p" || return 0; sleep 0.1; done
}

kill_node() { # NODE: keeper and postmaster, SIGKILL
  local n=$1 k pm
  k=$(proc_pid "$DIR/pids/keeper-$n.pid"); pm=$(postmaster_pid "$n")
  [ -n "$k$pm" ] || { say "node $n is not running"; return 0; }
  [ -n "$k" ] && kill -KILL "$k" 2>/dev/null || true
  [ -n "$pm" ] && kill -KILL "$pm" 2>/dev/null || true
  say "killed node $n (keeper ${k:--}, postmaster ${pm:--})"
}

netem_post() { # JSON body for POST /links
  curl -sf --max-time 5 -X POST "http://127.0.0.1:$NETEM_CONTROL/links" \
    -H 'Content-Type: application/json' -d "$1" >/dev/null ||
    die "meridian-netem (control port $NETEM_CONTROL) refused: $1"
}

# ---------------------------------------------------------------- up

cmd_up() {
  local topo="$root/topologies/lab.json"
  while [ $# -gt 0 ]; do
    case "$1" in
      --topology) topo=${2:?--topology needs a file}; shift 2 ;;
      --dir) DIR=${2:?--dir needs a directory}; shift 2 ;;
      *) die "unknown option for up: $1" ;;
    esac
  done
  DIR=$(realpath -m "${DIR:-$(default_dir)}")
  [ -f "$topo" ] || die "no topology file $topo"
  for b in meridianctl meridiand meridian-keeper meridian-netem; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b missing: build first (make build) or set MERIDIAN_BIN_DIR"
  done
  for b in "$ETCD_BIN" "$ETCDCTL_BIN" "$HAPROXY_BIN" "$PGBIN/psql"; do
    [ -x "$b" ] || die "$b missing: run scripts/install-deps.sh"
  done
  command -v jq >/dev/null || die "jq missing: run scripts/install-deps.sh"
  command -v socat >/dev/null || die "socat missing (the follower talks to HAProxy's admin socket): run scripts/install-deps.sh"
  if [ -f "$DIR/env" ]; then
    die "$DIR already holds a lab; run: meridianctl lab down --dir $DIR"
  fi

  step "checking topology $topo"
  "$BUILD/meridianctl" topology check "$topo" >&2 || die "the topology is invalid (errors above)"
  rm -rf "$DIR"
  mkdir -p "$DIR"/{pids,cmd,logs,nodes,etcd,cells,haproxy}
  chmod 755 "$DIR" "$DIR/nodes"
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$DIR/nodes" 2>/dev/null; then
    die "the postgres user cannot reach $DIR; pass --dir under /tmp or /var/tmp"
  fi
  "$BUILD/meridianctl" topology show --json "$topo" > "$DIR/topology.json" 2>/dev/null ||
    cp "$topo" "$DIR/topology.json"
  : > "$DIR/env"; : > "$DIR/procs"; : > "$DIR/links"; : > "$DIR/scale.list"; : > "$DIR/events.jsonl"
  flatten
  load_tables
  setv BUILD "$BUILD"
  setv TOPOLOGY "$(realpath "$topo")"
  setv LAB_NAME "$(T '.name // "lab"')"
  local base; base=$(T '.ports.base // "auto" | tostring')
  [[ "$base" =~ ^[0-9]+$ ]] && PORT_NEXT=$base
  local lease_ttl=${LAB_LEASE_TTL_S:-6} hb=${LAB_ETCD_HEARTBEAT_MS:-250} el=${LAB_ETCD_ELECTION_MS:-2500}
  setv LEASE_TTL_S "$lease_ttl"

  local keeper_role=0 keeper_adv=0 md_region=0
  "$BUILD/meridian-keeper" --help 2>&1 | grep -q -- '--role' && keeper_role=1
  "$BUILD/meridian-keeper" --help 2>&1 | grep -q -- '--advertise' && keeper_adv=1
  "$BUILD/meridiand" --help 2>&1 | grep -qw -- 'region' && md_region=1
  setv KEEPER_ROLE_DR "$keeper_role"
  setv KEEPER_ADVERTISE "$keeper_adv"
  local keeper_drf=0
  "$BUILD/meridian-keeper" --help 2>&1 | grep -q -- '--dr-fence-ms' && keeper_drf=1
  setv KEEPER_DR_FENCE "$keeper_drf"
  setv MERIDIAND_REGION "$md_region"

  # ---- names
  local members cells m c n r
  members=$(cut -f1 "$DIR/members.tsv")
  cells=$(cut -f1 "$DIR/cells.tsv")
  setv MEMBERS "$(echo $members)"
  setv CELLS "$(echo $cells)"
  setv NODES "$(cut -f1 "$DIR/nodes.tsv" | xargs)"
  # Regions where something connects to etcd: nodes and meridiand.
  local client_regions
  client_regions=$( (cut -f3 "$DIR/nodes.tsv"; cut -f2 "$DIR/md.tsv") | sort -u)

  # ---- ports: etcd, nodes, netem control
  step "allocating ports"
  for m in $members; do
    alloc_port "ETCD_CLIENT_$(vn "$m")" "$(member_field "$m" client_port)"
    alloc_port "ETCD_PEER_$(vn "$m")" "$(member_field "$m" peer_port)"
  done
  for n in $NODES; do
    alloc_port "PG_$(vn "$n")" "$(node_field "$n" pg_port)"
    alloc_port "METRICS_$(vn "$n")" "$(node_field "$n" keeper_port)"
  done
  alloc_port NETEM_CONTROL

  # ---- netem links
  local link_args=() dj d j mr nr
  add_link() { # NAME TARGET_PORT FROM_REGION TO_REGION KIND [DELAY_FROM] -> LINK_<NAME>
    local name=$1 target=$2 from=$3 to=$4 kind=$5 dj
    dj=$(wan_of "${6:-$from}" "$to")
    alloc_port "LINK_$(vn "$name")"
    link_args+=(--link "$name=$(getv "LINK_$(vn "$name")"):$target,delay_ms=${dj% *},jitter_ms=${dj#* }")
    echo "$name|$from|$to|$kind|${dj% *}|${dj#* }" >> "$DIR/links"
  }
  # etcd peers: one link per member that has a peer in another region; every
  # peer reaches the member through it (etcd advertises one peer URL to all).
  local cluster="" adv
  for m in $members; do
    mr=$(member_field "$m" region)
    adv=$(getv "ETCD_PEER_$(vn "$m")")
    local other=""
    for n in $members; do
      nr=$(member_field "$n" region)
      [ "$nr" != "$mr" ] && other=$nr
    done
    if [ -n "$other" ]; then
      add_link "peer-$m" "$adv" "*" "$mr" etcd-peer "$other"
      adv=$(getv "LINK_$(vn "peer-$m")")
    fi
    cluster="$cluster${cluster:+,}$m=http://127.0.0.1:$adv"
  done
  # etcd clients: per client region, direct to its own members, through a
  # link to the others (own region's members first).
  local eps_local eps_remote direct=""
  for m in $members; do direct="$direct${direct:+,}http://127.0.0.1:$(getv "ETCD_CLIENT_$(vn "$m")")"; done
  setv ETCD_DIRECT "$direct"
  for r in $client_regions; do
    eps_local=""; eps_remote=""
    for m in $members; do
      mr=$(member_field "$m" region)
      if [ "$mr" = "$r" ]; then
        eps_local="$eps_local${eps_local:+,}http://127.0.0.1:$(getv "ETCD_CLIENT_$(vn "$m")")"
      else
        add_link "etcd-$m-from-$r" "$(getv "ETCD_CLIENT_$(vn "$m")")" "$r" "$mr" etcd-client
        eps_remote="$eps_remote${eps_remote:+,}http://127.0.0.1:$(getv "LINK_$(vn "etcd-$m-from-$r")")"
      fi
    done
    setv "ETCD_EPS_$(vn "$r")" "$eps_local${eps_local:+${eps_remote:+,}}$eps_remote"
  done
  # PostgreSQL: for each node, a link from every other region where its cell
  # has a consumer (a node that may replicate from it, a meridiand).
  mkdir -p "$DIR/routes"
  for c in $cells; do
    local cregions
    cregions=$( (col nodes.tsv 2 "$c" 3; col md.tsv 1 "$c" 2) | sort -u)
    for n in $(cell_nodes "$c"); do
      nr=$(node_field "$n" region)
      for r in $cregions; do
        [ "$r" = "$nr" ] && continue
        add_link "pg-$n-from-$r" "$(pg_port_of "$n")" "$r" "$nr" pg
        echo "$n 127.0.0.1 $(getv "LINK_$(vn "pg-$n-from-$r")")" >> "$DIR/routes/$r.map"
      done
    done
  done

  step "starting meridian-netem (${#link_args[@]} / 2 links)"
  launch netem "$DIR/logs/netem.log" "$BUILD/meridian-netem" --control "127.0.0.1:$NETEM_CONTROL" \
    "${link_args[@]}" --pid-file "$DIR/pids/netem.pid"
  add_proc netem netem "*" "" "" "$DIR/pids/netem.pid"
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$NETEM_CONTROL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$NETEM_CONTROL/healthz" >/dev/null || die "meridian-netem did not start (see $DIR/logs/netem.log)"

  # ---- etcd
  step "starting etcd: $(echo $members) (heartbeat $hb ms, election $el ms)"
  local token unset_args=() v
  token="meridian-lab-$(printf %s "$DIR" | sha256sum | cut -c1-8)-$(date +%s)"
  for v in $(compgen -e); do case "$v" in ETCD_*|ETCDCTL_*) unset_args+=(-u "$v") ;; esac; done
  local prio=""
  if [ "$(id -u)" = 0 ]; then prio="nice -n -10 ionice -c2 -n0"; fi
  for m in $members; do
    local cport pport ap
    cport=$(getv "ETCD_CLIENT_$(vn "$m")"); pport=$(getv "ETCD_PEER_$(vn "$m")")
    ap=$(echo "$cluster" | tr ',' '\n' | sed -n "s|^$m=||p")
    mr=$(member_field "$m" region)
    # etcd ahead of the workload for the CPU and the disk (see etcd.sh).
    launch "etcd-$m" "$DIR/logs/etcd-$m.log" env "${unset_args[@]}" $prio "$ETCD_BIN" --name "$m" \
      --data-dir "$DIR/etcd/$m.etcd" \
      --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "$ap" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$token" \
      --heartbeat-interval "$hb" --election-timeout "$el" --logger zap --log-outputs stderr
    cp "$DIR/pids/etcd-$m.launch" "$DIR/pids/etcd-$m.pid"
    add_proc "etcd-$m" etcd "$mr" "$(member_field "$m" zone)" "" "$DIR/pids/etcd-$m.pid"
  done
  local ok=0
  for _ in $(seq 1 150); do
    etcdctl_ endpoint health >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
  done
  [ "$ok" = 1 ] || die "etcd did not become healthy in 30 s (logs: $DIR/logs/etcd-*.log)"

  # ---- keepers
  start_keeper() { # NODE
    local n=$1 c r z role args=()
    c=$(node_cell "$n"); r=$(node_field "$n" region); z=$(node_field "$n" zone); role=$(node_field "$n" role)
    args=(--node "$n" --cell "$c" --etcd "$(getv "ETCD_EPS_$(vn "$r")")" --dir "$DIR/nodes/$n"
          --pg-port "$(pg_port_of "$n")" --zone "$z" --region "$r" --lease-ttl-s "$LEASE_TTL_S"
          --metrics-listen "127.0.0.1:$(getv "METRICS_$(vn "$n")")" --pid-file "$DIR/pids/keeper-$n.pid")
    if [ "$role" = dr-standby ] && [ "$KEEPER_ROLE_DR" = 1 ]; then
      args+=(--role dr)
      # The cell's regional failover policy (topology "failover") is the DR
      # standby's to apply: automatic after region_failover_after_s when it
      # lagged at most max_loss_s, else only on `meridianctl failover`.
      local pol after loss
      pol=$(T --arg c "$c" '.cells[] | select(.name == $c) | .failover.mode // "manual"')
      after=$(T --arg c "$c" '.cells[] | select(.name == $c) | .failover.region_failover_after_s // 10')
      loss=$(T --arg c "$c" '.cells[] | select(.name == $c) | .failover.max_loss_s // 1')
      args+=(--region-failover "$pol")
      if [ "$pol" = automatic ]; then
        args+=(--region-failover-after-s "$after" --max-loss-ms "$(awk -v s="$loss" 'BEGIN{printf "%d", s*1000}')")
      fi
    elif [ "$KEEPER_DR_FENCE" = 1 ] &&
         [ "$(T --arg c "$c" '[.cells[] | select(.name == $c) | select(.failover.mode == "automatic") | .nodes[] | select(.role == "dr-standby")] | length')" -gt 0 ]; then
      # A home node of a cell whose DR standby may take over on its own:
      # as primary, fence as soon as etcd and the DR standby both go
      # silent for half the loss bound (a partition), not a lease later.
      local loss_h
      loss_h=$(T --arg c "$c" '.cells[] | select(.name == $c) | .failover.max_loss_s // 1')
      args+=(--dr-fence-ms "$(awk -v s="$loss_h" 'BEGIN{v = s*500; if (v < 500) v = 500; printf "%d", v}')")
    fi
    if [ "$KEEPER_ADVERTISE" = 1 ]; then
      local rr
      for rr in $(cat "$DIR/regions.txt"); do
        local lp; lp=$(getv "LINK_$(vn "pg-$n-from-$rr")")
        [ -n "$lp" ] && args+=(--advertise "$rr=127.0.0.1:$lp")
      done
    fi
    launch "keeper-$n" "$DIR/logs/keeper-$n.log" "$BUILD/meridian-keeper" "${args[@]}"
    add_proc "keeper-$n" keeper "$r" "$z" "$c" "$DIR/pids/keeper-$n.pid"
    add_proc "postgres-$n" postgres "$r" "$z" "$c" "$DIR/nodes/$n/data/postmaster.pid"
  }
  local home_nodes dr_nodes
  home_nodes=$(awk -F'\t' '$5 != "dr-standby" { print $1 }' "$DIR/nodes.tsv" | xargs)
  dr_nodes=$(awk -F'\t' '$5 == "dr-standby" { print $1 }' "$DIR/nodes.tsv" | xargs)
  step "starting keepers: $home_nodes (PostgreSQL: initdb, then pg_basebackup)"
  for n in $home_nodes; do start_keeper "$n"; done

  # ---- wait for each cell: a leader, a synchronous standby, the schema
  local pending="$cells" l lp want deadline
  deadline=$(( $(date +%s) + 150 ))
  while [ -n "$pending" ]; do
    local still=""
    for c in $pending; do
      l=$(leader_node "$c")
      want=$(awk -F'\t' -v c="$c" '$2 == c && $5 != "dr-standby"' "$DIR/nodes.tsv" | wc -l)
      [ "$want" -gt 1 ] && want=1 || want=0
      if [ -n "$l" ] && lp=$(pg_port_of "$l") &&
         [ "$(sql_at "$lp" -c 'SELECT pg_is_in_recovery()')" = f ] &&
         [ "$(sql_at "$lp" -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('quorum','sync')")" -ge "$want" ] 2>/dev/null; then
        step "cell $c: leader $l (epoch $(cell_epoch "$c")); applying the ledger schema"
        "$BUILD/meridianctl" --dsn "host=127.0.0.1 port=$lp user=postgres dbname=meridian" db migrate >/dev/null ||
          die "db migrate failed on $l"
      else
        still="$still $c"
      fi
    done
    pending=${still# }
    [ -z "$pending" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || die "cells without a healthy leader after 150 s: $pending (logs: $DIR/logs/keeper-*.log)"
    sleep 0.5
  done
  if [ -n "$dr_nodes" ]; then
    if [ "$KEEPER_ROLE_DR" = 1 ]; then
      step "starting DR standbys: $dr_nodes (--role dr)"
    else
      step "starting DR standbys: $dr_nodes (this keeper has no --role: they run as ordinary standbys)"
    fi
    for n in $dr_nodes; do start_keeper "$n"; done
  fi

  # ---- meridiand
  local urls_all=""
  for c in $cells; do
    mkdir -p "$DIR/cells/$c"
    "$BUILD/meridianctl" config init --out "$DIR/cells/$c/meridiand.conf" \
      --dsn "user=postgres dbname=meridian" --listen "127.0.0.1:8080" >/dev/null
    printf 'etcd = %s\ncell = %s\n' "$ETCD_DIRECT" "$c" >> "$DIR/cells/$c/meridiand.conf"
    # "durability": "global" waits for this cell's DR standbys only.
    local drs
    drs=$(T --arg c "$c" '[.cells[] | select(.name == $c) | .nodes[] | select(.role == "dr-standby") | .name] | join(",")')
    [ -n "$drs" ] && echo "global_standby_names = $drs" >> "$DIR/cells/$c/meridiand.conf"
    local count port0 scale i _c
    while IFS=$'\t' read -r _c r count port0 scale; do
      [ "$_c" = "$c" ] || continue
      local conf="$DIR/cells/$c/meridiand-$r.conf"
      cp "$DIR/cells/$c/meridiand.conf" "$conf"
      [ "$MERIDIAND_REGION" = 1 ] && echo "region = $r" >> "$conf"
      for i in $(seq 1 "$count"); do
        local name="meridiand-$c-$r-$i" fixed=auto
        [[ "$port0" =~ ^[0-9]+$ ]] && fixed=$((port0 + i - 1))
        alloc_port "MD_$(vn "$c-$r-$i")" "$fixed"
        port=$(getv "MD_$(vn "$c-$r-$i")")
        launch "$name" "$DIR/logs/$name.log" "$BUILD/meridiand" --config "$conf" \
          --listen "127.0.0.1:$port" --etcd "$(getv "ETCD_EPS_$(vn "$r")")" --pid-file "$DIR/pids/$name.pid"
        add_proc "$name" meridiand "$r" "" "$c" "$DIR/pids/$name.pid"
        echo "$c $r $name $port" >> "$DIR/meridiand.list"
        urls_all="$urls_all http://127.0.0.1:$port"
      done
      # Scale-up (topology "scale_to"): the instances this region adds while
      # it serves the cell. Ports now, command lines in DIR/scale/, disabled
      # servers in the region's HAProxy; lab-follow.sh starts them when the
      # cell's leader moves into the region.
      [[ "${scale:-}" =~ ^[0-9]+$ ]] || scale=$count
      for ((i = count + 1; i <= scale && i <= 16; i++)); do
        local name="meridiand-$c-$r-$i" fixed=auto
        [[ "$port0" =~ ^[0-9]+$ ]] && fixed=$((port0 + i - 1))
        alloc_port "MD_$(vn "$c-$r-$i")" "$fixed"
        port=$(getv "MD_$(vn "$c-$r-$i")")
        mkdir -p "$DIR/scale"
        printf '%q ' "$BUILD/meridiand" --config "$conf" --listen "127.0.0.1:$port" \
          --etcd "$(getv "ETCD_EPS_$(vn "$r")")" --pid-file "$DIR/pids/$name.pid" > "$DIR/scale/$name.cmd"
        echo >> "$DIR/scale/$name.cmd"
        echo "$c $r $name $port" >> "$DIR/scale.list"
      done
    done < "$DIR/md.tsv"
  done
  step "starting meridiand:$(awk '{printf " %s", $3}' "$DIR/meridiand.list" 2>/dev/null)"
  for u in $urls_all; do
    for _ in $(seq 1 150); do curl -sf --max-time 2 "$u/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
    curl -sf --max-time 2 "$u/readyz" >/dev/null 2>&1 || die "meridiand at $u not ready in 30 s (logs: $DIR/logs/meridiand-*.log)"
  done

  # ---- HAProxy
  step "starting HAProxy: one per region and the global entry"
  write_haproxy
  local h
  for h in $(awk '{print $1}' "$DIR/haproxy/list"); do
    "$HAPROXY_BIN" -c -q -f "$DIR/haproxy/$h.cfg" >"$DIR/logs/haproxy-$h.check" 2>&1 ||
      { cat "$DIR/logs/haproxy-$h.check" >&2; die "HAProxy rejects $DIR/haproxy/$h.cfg"; }
    printf '%q ' "$HAPROXY_BIN" -f "$DIR/haproxy/$h.cfg" -D -p "$DIR/pids/haproxy-$h.pid" > "$DIR/cmd/haproxy-$h"
    "$HAPROXY_BIN" -f "$DIR/haproxy/$h.cfg" -D -p "$DIR/pids/haproxy-$h.pid" </dev/null >>"$DIR/logs/haproxy-$h.log" 2>&1 ||
      die "HAProxy $h did not start (see $DIR/logs/haproxy-$h.log)"
    add_proc "haproxy-$h" haproxy "$(awk -v h="$h" '$1==h {print $2}' "$DIR/haproxy/list")" "" "" "$DIR/pids/haproxy-$h.pid"
  done
  # The global entry answers for a cell once a region passed its checks.
  for c in $cells; do
    for _ in $(seq 1 100); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "X-Meridian-Cell: $c" \
            "http://127.0.0.1:$GLOBAL_PORT/readyz")" = 200 ] && break
      sleep 0.2
    done
  done

  # ---- the follower: moves the global entry's weight to the region of each
  # cell's leader and scales meridiand up there (scripts/lab-follow.sh).
  step "starting the follower (global entry follows each cell's leader; scale-up)"
  launch follower "$DIR/logs/follower.log" bash "$here/lab-follow.sh" --dir "$DIR" \
    --pid-file "$DIR/pids/follower.pid"
  add_proc follower follower "*" "" "" "$DIR/pids/follower.pid"
  for _ in $(seq 1 50); do [ -s "$DIR/pids/follower.pid" ] && break; sleep 0.1; done
  [ -n "$(proc_pid "$DIR/pids/follower.pid")" ] || die "the follower did not start (see $DIR/logs/follower.log)"

  # ---- demo keys (they name their cell: the config has `cell`)
  for c in $cells; do
    l=$(leader_node "$c")
    "$BUILD/meridianctl" --config "$DIR/cells/$c/meridiand.conf" \
      --dsn "host=127.0.0.1 port=$(pg_port_of "$l") user=postgres dbname=meridian" --json \
      apikey create --customer "demo-$c" --label "lab demo" 2>"$DIR/logs/apikey-$c.log" |
      jq -r '.key' > "$DIR/cells/$c/demo.key" || die "cannot create the demo key of cell $c"
    chmod 600 "$DIR/cells/$c/demo.key"
  done

  # ---- the DR standbys: the lab is up once each streams from its leader
  # (a region loss before that would have nothing to promote).
  if [ -n "$dr_nodes" ]; then
    step "waiting for the DR standbys to stream: $dr_nodes"
    local dn dc ok_dr
    for dn in $dr_nodes; do
      dc=$(awk -F'\t' -v n="$dn" '$1 == n { print $2 }' "$DIR/nodes.tsv")
      ok_dr=0
      deadline=$(( $(date +%s) + 120 ))
      while [ "$(date +%s)" -lt "$deadline" ]; do
        l=$(leader_node "$dc")
        if [ -n "$l" ] && lp=$(pg_port_of "$l") &&
           [ "$(sql_at "$lp" -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$dn' AND state = 'streaming'")" = 1 ]; then
          ok_dr=1; break
        fi
        sleep 0.5
      done
      [ "$ok_dr" = 1 ] || die "DR standby $dn of cell $dc is not streaming after 120 s (logs: $DIR/logs/keeper-$dn.log)"
    done
  fi
  step "lab up"
  print_endpoints
}

# HAProxy configs: one per region that runs meridiand, and the global entry.
write_haproxy() {
  local regions r c h
  regions=$(awk '{print $2}' "$DIR/meridiand.list" | sort -u)
  : > "$DIR/haproxy/list"
  alloc_port GLOBAL_PORT
  for r in $regions; do alloc_port "HAPROXY_$(vn "$r")"; echo "$r $r" >> "$DIR/haproxy/list"; done
  for c in $CELLS; do alloc_port "GLOBAL_$(vn "$c")"; done
  echo "global global" >> "$DIR/haproxy/list"

  problem() { # STATUS CODE TITLE
    printf "http-request return status %s content-type application/problem+json string '{\"type\":\"https://meridian.example/problems/%s\",\"title\":\"%s\",\"status\":%s,\"code\":\"%s\"}'" \
      "$1" "$2" "$3" "$1" "$2"
  }
  common() {
    cat <<EOF
global
    maxconn 4096
    stats socket $DIR/haproxy/$1.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    retries 2
    option redispatch
    default-server inter 1s fastinter 500ms downinter 500ms fall 2 rise 2
EOF
  }
  for r in $regions; do
    {
      common "$r"
      echo "frontend region"
      echo "    bind 127.0.0.1:$(getv "HAPROXY_$(vn "$r")")"
      echo "    $(problem 421 cell_required "X-Meridian-Cell header missing") if !{ req.hdr(x-meridian-cell) -m found }"
      for c in $CELLS; do
        if awk -v c="$c" -v r="$r" '$1==c && $2==r {f=1} END {exit !f}' "$DIR/meridiand.list"; then
          echo "    use_backend cell_$c if { req.hdr(x-meridian-cell) -m str $c }"
        fi
      done
      echo "    # a cell this region does not serve: forward to the global entry"
      echo "    default_backend to_global"
      for c in $CELLS; do
        awk -v c="$c" -v r="$r" '$1==c && $2==r {f=1} END {exit !f}' "$DIR/meridiand.list" || continue
        echo "backend cell_$c"
        echo "    option httpchk"
        echo "    http-check send meth GET uri /readyz"
        echo "    http-response set-header X-Meridian-Region $r"
        awk -v c="$c" -v r="$r" '$1==c && $2==r {printf "    server %s 127.0.0.1:%s check\n", $3, $4}' "$DIR/meridiand.list"
        # Scale-up instances: declared now, enabled by lab-follow.sh through
        # the admin socket once their /readyz answers.
        awk -v c="$c" -v r="$r" '$1==c && $2==r {printf "    server %s 127.0.0.1:%s check disabled\n", $3, $4}' "$DIR/scale.list"
      done
      echo "backend to_global"
      echo "    server global 127.0.0.1:$GLOBAL_PORT"
    } > "$DIR/haproxy/$r.cfg"
  done
  {
    common global
    echo "frontend global"
    echo "    bind 127.0.0.1:$GLOBAL_PORT"
    echo "    # /cells/<cell>/... names the cell in the path: strip it, set the header"
    echo "    http-request set-header X-Meridian-Cell %[path,field(3,/)] if { path_beg /cells/ }"
    echo "    http-request set-path %[path,regsub(^/cells/[^/]*,)] if { path_beg /cells/ }"
    echo "    # else the cell an API key names (mk_<cell>_ + 43 characters; keys of the"
    echo "    # older shape mk_ + 43 name none and need the header, prefix or port)"
    echo "    acl key_names_cell req.hdr(authorization) -m reg ^[Bb][Ee][Aa][Rr][Ee][Rr]\\ +mk_[a-z0-9][a-z0-9_-]*_[A-Za-z0-9_-]{43}\$"
    echo "    http-request set-header X-Meridian-Cell %[req.hdr(authorization),'regsub(\"^[^ ]+ +mk_([a-z0-9][a-z0-9_-]*)_[A-Za-z0-9_-]{43}\$\",\"\\1\")'] if !{ req.hdr(x-meridian-cell) -m found } key_names_cell"
    echo "    $(problem 421 cell_required "name the cell: a key naming it, the X-Meridian-Cell header or a /cells/CELL/ path prefix") if !{ req.hdr(x-meridian-cell) -m found }"
    echo "    acl known_cell req.hdr(x-meridian-cell) -m str $CELLS"
    echo "    $(problem 404 unknown_cell "no such cell") if !known_cell"
    for c in $CELLS; do
      echo "    use_backend cell_$c if { req.hdr(x-meridian-cell) -m str $c }"
    done
    for c in $CELLS; do
      echo "frontend cell_$c"
      echo "    bind 127.0.0.1:$(getv "GLOBAL_$(vn "$c")")"
      echo "    http-request set-header X-Meridian-Cell $c"
      echo "    default_backend cell_$c"
    done
    for c in $CELLS; do
      local home
      home=$(home_of "$c")
      echo "backend cell_$c"
      echo "    http-request set-header X-Meridian-Cell $c"
      echo "    option httpchk"
      echo "    http-check send meth GET uri /readyz hdr X-Meridian-Cell $c"
      # One server per region serving the cell, the home region first. The
      # region of the cell's leader gets the traffic: weight 100, the others
      # weight 0 (checked, idle). lab-follow.sh moves the weight when the
      # leader changes region (runtime API, no reload). Each region also has
      # a backup server tracking its health: when the weighted region fails
      # its checks, the first healthy other one serves until the follower
      # catches up.
      local order="" w
      for r in $home $regions; do
        case " $order " in *" $r "*) continue ;; esac
        awk -v c="$c" -v r="$r" '$1==c && $2==r {f=1} END {exit !f}' "$DIR/meridiand.list" && order="$order $r"
      done
      for r in $order; do
        w=0; [ "$r" = "$home" ] && w=100
        echo "    server $r 127.0.0.1:$(getv "HAPROXY_$(vn "$r")") check weight $w"
      done
      if [ "$(echo $order | wc -w)" -gt 1 ]; then
        for r in $order; do echo "    server $r-backup 127.0.0.1:$(getv "HAPROXY_$(vn "$r")") track cell_$c/$r backup"; done
      fi
    done
  } > "$DIR/haproxy/global.cfg"
}

print_endpoints() {
  load
  local c r m n l
  echo "Meridian lab \"$LAB_NAME\" is up in $DIR"
  echo
  echo "Global entry (the cell comes from the API key, the X-Meridian-Cell header or a /cells/CELL/ prefix):"
  echo "  http://127.0.0.1:$GLOBAL_PORT"
  for c in $CELLS; do
    printf '  cell %-8s http://127.0.0.1:%s  (this port is cell %s only)\n' "$c" "$(getv "GLOBAL_$(vn "$c")")" "$c"
  done
  echo "Regional HAProxy:"
  while read -r h r; do
    [ "$h" = global ] && continue
    printf '  %-10s http://127.0.0.1:%s\n' "$r" "$(getv "HAPROXY_$(vn "$r")")"
  done < "$DIR/haproxy/list"
  echo "meridiand:"
  while read -r c r n p; do printf '  %-24s http://127.0.0.1:%s  (cell %s, %s)\n' "$n" "$p" "$c" "$r"; done < "$DIR/meridiand.list"
  while read -r c r n p; do
    printf '  %-24s http://127.0.0.1:%s  (cell %s, %s: started when the cell'"'"'s leader moves there)\n' "$n" "$p" "$c" "$r"
  done < "$DIR/scale.list"
  echo "etcd (direct client URLs): $ETCD_DIRECT"
  echo "netem control: http://127.0.0.1:$NETEM_CONTROL/links"
  echo "Nodes:"
  for c in $CELLS; do
    l=$(leader_node "$c")
    for n in $(cell_nodes "$c"); do
      local role=standby; [ "$n" = "$l" ] && role=primary
      [ "$(node_field "$n" role)" = dr-standby ] && role="dr-standby"
      printf '  %-8s cell %-4s %-8s %-4s %-10s postgres 127.0.0.1:%s  keeper http://127.0.0.1:%s/metrics\n' \
        "$n" "$c" "$(node_field "$n" region)" "$(node_field "$n" zone)" "$role" "$(pg_port_of "$n")" "$(getv "METRICS_$(vn "$n")")"
    done
  done
  echo
  echo "Demo API keys (shown here once; also in $DIR/cells/CELL/demo.key):"
  for c in $CELLS; do printf '  cell %-6s %s\n' "$c" "$(cat "$DIR/cells/$c/demo.key")"; done
  c=$(echo "$CELLS" | awk '{print $1}')
  echo
  echo "Try:  curl -s http://127.0.0.1:$GLOBAL_PORT/cells/$c/v1/balances -H \"Authorization: Bearer \$(cat $DIR/cells/$c/demo.key)\""
  echo "Then: meridianctl lab status; meridianctl lab fault node-kill NODE; meridianctl lab down"
}

# ---------------------------------------------------------------- down

cmd_down() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) DIR=${2:?}; shift 2 ;;
      *) die "unknown option for down: $1" ;;
    esac
  done
  DIR=$(realpath -m "${DIR:-$(default_dir)}")
  [ -f "$DIR/env" ] || { say "no lab in $DIR"; return 0; }
  load
  local kind name f p
  # Front to back: the follower (it starts meridiand), HAProxy, meridiand,
  # keepers, PostgreSQL, etcd, netem.
  for kind in follower haproxy meridiand keeper postgres etcd netem; do
    local pids=""
    while IFS='|' read -r name k _ _ _ f; do
      [ "$k" = "$kind" ] || continue
      p=$(proc_pid "$f")
      [ -z "$p" ] && [ -f "$DIR/pids/$name.launch" ] && p=$(proc_pid "$DIR/pids/$name.launch")
      [ -n "$p" ] && pids="$pids $p"
    done < <(head -n "$MAX_PROCS" "$DIR/procs")
    # postgres: SIGINT = fast shutdown; the others: SIGTERM.
    local sig=TERM; [ "$kind" = postgres ] && sig=INT
    for p in $pids; do kill -CONT "$p" 2>/dev/null || true; kill -"$sig" "$p" 2>/dev/null || true; done
    for p in $pids; do stop_pid "$p" "$sig" 100; done
  done
  # Orphaned PostgreSQL children of a SIGKILLed postmaster exit on their own.
  local left=""
  while IFS='|' read -r name _ _ _ _ f; do
    p=$(proc_pid "$f"); [ -n "$p" ] && left="$left $name($p)"
  done < <(head -n "$MAX_PROCS" "$DIR/procs")
  [ -z "$left" ] || die "still running after down:$left"
  mv "$DIR/env" "$DIR/env.down"
  say "lab down (everything stopped by PID; logs kept in $DIR/logs)"
}

# ---------------------------------------------------------------- status

cmd_status() {
  local json=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) DIR=${2:?}; shift 2 ;;
      --json) json=1; shift ;;
      *) die "unknown option for status: $1" ;;
    esac
  done
  DIR=$(realpath -m "${DIR:-$(default_dir)}")
  load
  local procs="[]" name kind region zone cell f p c l cells="{}" lj ep
  procs=$(while IFS='|' read -r name kind region zone cell f; do
      p=$(proc_pid "$f")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$region" "$zone" "$cell" "$p"
    done < <(head -n "$MAX_PROCS" "$DIR/procs") |
    jq -R -s -c '[split("\n")[] | select(length > 0) | split("\t")
      | {name:.[0], kind:.[1], region:.[2], zone:.[3], cell:.[4], pid:(.[5] | tonumber? // null), alive:(.[5] != "")}]')
  for c in $CELLS; do
    lj=$(leader_json "$c"); ep=$(cell_epoch "$c"); l=""
    [ -n "$lj" ] && l=$(jq -r '.node // empty' <<<"$lj" 2>/dev/null || true)
    local lr=""; [ -n "$l" ] && lr=$(node_field "$l" region)
    cells=$(jq -c --arg c "$c" --arg l "$l" --arg lr "$lr" --arg e "${ep:-}" \
      --arg g "http://127.0.0.1:$(getv "GLOBAL_$(vn "$c")")" --arg k "$DIR/cells/$c/demo.key" \
      --arg conf "$DIR/cells/$c/meridiand.conf" \
      '.[$c] = {leader:(if $l == "" then null else $l end), leader_region:(if $lr == "" then null else $lr end),
                epoch:($e|tonumber? // null), global_url:$g, demo_key_file:$k, config:$conf}' <<<"$cells")
  done
  local links="[]"
  links=$(curl -sf --max-time 2 "http://127.0.0.1:$NETEM_CONTROL/links" 2>/dev/null || echo '[]')
  # The follower's events (route switches, scale-ups; the last 64) and the
  # scale-up plan: instances a region adds while it serves the cell.
  local events="[]" scale="[]"
  [ -f "$DIR/events.jsonl" ] && events=$(tail -n 64 "$DIR/events.jsonl" | jq -s -c '[.[] | objects]' 2>/dev/null || echo '[]')
  [ -f "$DIR/scale.list" ] && scale=$(head -n "$MAX_PROCS" "$DIR/scale.list" |
    jq -R -s -c '[split("\n")[] | select(length > 0) | split(" ") | {cell:.[0], region:.[1], name:.[2], port:(.[3] | tonumber)}]')
  local out
  out=$(jq -n --arg dir "$DIR" --arg topo "$TOPOLOGY" --argjson procs "$procs" --argjson cells "$cells" \
    --argjson links "$links" --arg g "http://127.0.0.1:$GLOBAL_PORT" --arg etcd "$ETCD_DIRECT" \
    --arg netem "http://127.0.0.1:$NETEM_CONTROL" --argjson events "$events" --argjson scale "$scale" \
    '{dir:$dir, topology:$topo, global_url:$g, etcd:$etcd, netem_control:$netem,
      alive:([$procs[] | select(.alive)] | length), processes_total:($procs | length),
      cells:$cells, processes:$procs,
      scale_up:[$scale[] | . as $s | .started = ([$procs[] | select(.name == $s.name)] | length > 0)
                | .alive = ([$procs[] | select(.name == $s.name and .alive)] | length > 0)],
      events:$events,
      links:[$links[] | {name, mode, delay_ms, jitter_ms, connections}]}')
  if [ "$json" = 1 ]; then echo "$out" | jq -c .; return 0; fi
  echo "lab in $DIR ($(jq -r '.alive' <<<"$out")/$(jq -r '.processes_total' <<<"$out") processes alive)"
  echo "global entry $(jq -r .global_url <<<"$out")"
  jq -r '.cells | to_entries[] | "cell \(.key): leader \(.value.leader // "NONE") in \(.value.leader_region // "-"), epoch \(.value.epoch // "-"), entry \(.value.global_url)"' <<<"$out"
  jq -r '.processes[] | "  \(if .alive then "up  " else "DOWN" end) \(.name) \(.region) \(.zone) \(if .pid then "pid \(.pid)" else "" end)"' <<<"$out"
  jq -r '.scale_up[] | select(.started | not) | "  idle \(.name) \(.region) (scale-up for cell \(.cell), port \(.port))"' <<<"$out"
  jq -r 'if (.events | length) > 0 then "events:", (.events[-10:][] | "  \(.time) \(.kind) cell \(.cell) \(.region)\(if .leader then " leader \(.leader) epoch \(.epoch)" else "" end)\(if .instances then " instances \(.instances)" else "" end)\(if .instance then " \(.instance)" else "" end)\(if .ready_after_ms then " ready after \(.ready_after_ms) ms" else "" end)") else empty end' <<<"$out"
  jq -r 'if (.links | length) > 0 then "netem links:", (.links[] | "  \(.name) \(.mode) \(.delay_ms) ms ±\(.jitter_ms)") else "netem: not answering" end' <<<"$out"
}

# ---------------------------------------------------------------- fault

cmd_fault() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) DIR=${2:?}; shift 2 ;;
      *) break ;;
    esac
  done
  DIR=$(realpath -m "${DIR:-$(default_dir)}")
  load
  local kind=${1:-}; shift || true
  local n name k r z c f p
  case "$kind" in
    node-kill)
      n=${1:?usage: fault node-kill NODE}
      [ -n "$(pg_port_of "$n")" ] || die "no node $n (nodes: $NODES)"
      kill_node "$n" ;;
    db-crash)
      n=${1:?usage: fault db-crash NODE}
      [ -n "$(pg_port_of "$n")" ] || die "no node $n (nodes: $NODES)"
      p=$(postmaster_pid "$n"); [ -n "$p" ] || die "PostgreSQL of $n is not running"
      kill -KILL "$p"; say "killed the postmaster of $n (pid $p)" ;;
    zone-loss)
      r=${1:?usage: fault zone-loss REGION ZONE}; z=${2:?usage: fault zone-loss REGION ZONE}
      local hit=0
      for n in $(awk -F'\t' -v r="$r" -v z="$z" '$3 == r && $4 == z { print $1 }' "$DIR/nodes.tsv"); do
        kill_node "$n"; hit=1
      done
      local pr pz
      while IFS='|' read -r name k pr pz _ f; do
        [ "$k" = etcd ] && [ "$pr" = "$r" ] && [ "$pz" = "$z" ] || continue
        p=$(proc_pid "$f"); [ -n "$p" ] && kill -KILL "$p" && say "killed $name (pid $p)"; hit=1
      done < <(head -n "$MAX_PROCS" "$DIR/procs")
      [ "$hit" = 1 ] || die "nothing runs in $r/$z" ;;
    region-loss)
      r=${1:?usage: fault region-loss REGION}
      grep -qx -- "$r" "$DIR/regions.txt" || die "no region $r"
      while IFS='|' read -r name k pr _ _ f; do
        [ "$pr" = "$r" ] || continue
        if [ "$k" = keeper ]; then kill_node "${name#keeper-}"; continue; fi
        [ "$k" = postgres ] && continue
        p=$(proc_pid "$f"); [ -n "$p" ] && kill -KILL "$p" && say "killed $name (pid $p)"
      done < <(head -n "$MAX_PROCS" "$DIR/procs") ;;
    db-loss)
      c=${1:?usage: fault db-loss CELL REGION}; r=${2:?usage: fault db-loss CELL REGION}
      local hit=0
      for n in $(awk -F'\t' -v c="$c" -v r="$r" '$2 == c && $3 == r { print $1 }' "$DIR/nodes.tsv"); do
        if [ -n "$(proc_pid "$DIR/pids/keeper-$n.pid")" ] || [ -n "$(postmaster_pid "$n")" ]; then
          kill_node "$n"; hit=1
        fi
      done
      [ "$hit" = 1 ] || die "no running node of cell $c in $r" ;;
    etcd-majority-loss)
      # Freeze every etcd member outside REGION (SIGSTOP: to the others as
      # silent as a crash, and `heal` brings them back with their data).
      r=${1:?usage: fault etcd-majority-loss KEEP_REGION}
      grep -qx -- "$r" "$DIR/regions.txt" || die "no region $r"
      local total=0 frozen=0
      while IFS='|' read -r name k pr _ _ f; do
        [ "$k" = etcd ] || continue
        total=$((total + 1))
        [ "$pr" = "$r" ] && continue
        p=$(proc_pid "$f")
        if [ -n "$p" ] && kill -STOP "$p"; then
          echo "$name $p" >> "$DIR/frozen"; frozen=$((frozen + 1))
        fi
      done < <(head -n "$MAX_PROCS" "$DIR/procs")
      [ $((frozen * 2)) -gt "$total" ] || die "froze $frozen of $total etcd members: not a majority (keep a region with fewer members)"
      say "froze $frozen of $total etcd members (all but $r's): etcd has no majority; undo with: fault heal" ;;
    partition)
      r=${1:?usage: fault partition REGION}
      grep -qx -- "$r" "$DIR/regions.txt" || die "no region $r"
      local names
      names=$(awk -F'|' -v r="$r" '$2==r || $3==r {print $1}' "$DIR/links" | jq -R . | jq -sc .)
      # etcd advertises one peer URL to every peer, so the peer links cannot
      # be cut per pair: the region's etcd members are frozen instead (to
      # the others they are as silent as across a partition). Frozen first:
      # the region's primary can renew its lease no more from this moment.
      while IFS='|' read -r name k pr _ _ f; do
        [ "$k" = etcd ] && [ "$pr" = "$r" ] || continue
        p=$(proc_pid "$f"); [ -n "$p" ] && kill -STOP "$p" && echo "$name $p" >> "$DIR/frozen"
      done < <(head -n "$MAX_PROCS" "$DIR/procs")
      [ "$names" != "[]" ] && netem_post "{\"names\":$names,\"mode\":\"blackhole\"}"
      say "partitioned $r: froze its etcd members; blackholed $names" ;;
    heal)
      netem_post '{"mode":"pass"}'
      if [ -f "$DIR/frozen" ]; then
        while read -r name p; do
          [ "$(proc_pid "$DIR/pids/$name.pid")" = "$p" ] && kill -CONT "$p"
        done < "$DIR/frozen"
        rm -f "$DIR/frozen"
      fi
      say "healed: every link passes" ;;
    wan-delay)
      local ms=${1:?usage: fault wan-delay MS [JITTER_MS]} jit=${2:-0}
      [[ "$ms" =~ ^[0-9]+$ && "$jit" =~ ^[0-9]+$ ]] || die "wan-delay wants whole milliseconds"
      while IFS='|' read -r name _ _ _ _ _; do
        curl -sf --max-time 5 -X POST "http://127.0.0.1:$NETEM_CONTROL/links/$name" \
          -H 'Content-Type: application/json' -d "{\"delay_ms\":$ms,\"jitter_ms\":$jit}" >/dev/null ||
          die "meridian-netem refused the delay of link $name"
      done < <(head -n "$MAX_PROCS" "$DIR/links")
      say "every WAN link: ${ms} ms one way, jitter ${jit} ms" ;;
    restart)
      name=${1:?usage: fault restart NAME}
      [ -f "$DIR/cmd/$name" ] || die "no process $name (see lab status)"
      f=$(awk -F'|' -v n="$name" '$1==n {print $6}' "$DIR/procs")
      [ -z "$(proc_pid "$f")" ] || die "$name is running"
      if [[ "$name" == haproxy-* ]]; then
        bash -c "$(cat "$DIR/cmd/$name")" </dev/null >>"$DIR/logs/$name.log" 2>&1
      else
        setsid bash -c "exec $(cat "$DIR/cmd/$name")" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
        echo "$!" > "$DIR/pids/$name.launch"
        [[ "$name" == etcd-* ]] && echo "$!" > "$DIR/pids/$name.pid"
      fi
      say "restarted $name" ;;
    *)
      die "unknown fault '$kind' (node-kill, db-crash, db-loss, zone-loss, region-loss, partition, etcd-majority-loss, heal, wan-delay, restart)" ;;
  esac
}

# ---------------------------------------------------------------- main

BUILD=$(realpath -m "${MERIDIAN_BIN_DIR:-$root/build}")
DIR=${LAB_DIR:-}
cmd=${1:-}; shift || true
case "$cmd" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status "$@" ;;
  fault) cmd_fault "$@" ;;
  dsn)
    [ "${1:-}" = --dir ] && { DIR=$2; shift 2; }
    DIR=$(realpath -m "${DIR:-$(default_dir)}"); load
    l=$(leader_node "${1:?usage: lab.sh dsn [--dir DIR] CELL}")
    [ -n "$l" ] || die "cell $1 has no leader now"
    echo "host=127.0.0.1 port=$(pg_port_of "$l") user=postgres dbname=meridian" ;;
  dir)
    [ "${1:-}" = --dir ] && { DIR=$2; shift 2; }
    realpath -m "${DIR:-$(default_dir)}" ;;
  env)
    [ "${1:-}" = --dir ] && { DIR=$2; shift 2; }
    DIR=$(realpath -m "${DIR:-$(default_dir)}"); load
    cat "$DIR/env" ;;
  -h|--help|help|"")
    sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "$cmd" ] || exit 2 ;;
  *) echo "lab: unknown command '$cmd' (up, down, status, fault, dsn, env, dir)" >&2; exit 2 ;;
esac
