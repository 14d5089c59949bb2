#!/usr/bin/env bash
# run-local.sh BUILD_DIR — `make run`: the whole default topology, the
# two-region lab of docs/LAB.md, on 127.0.0.1 until Ctrl-C.
#
# `lab.sh up` with topologies/lab.json: meridian-netem on every link
# between regions (40 ms each way), etcd x3 (us-east, eu-west, witness),
# cell us (three nodes in us-east and a DR standby in eu-west) and cell eu
# (three nodes in eu-west) run by meridian-keepers, meridiand in each
# region, HAProxy per region and the global entry, and the follower that
# moves the global entry when a cell changes region. lab.sh prints the
# endpoints and a demo API key per cell; this script adds how to operate
# it. Ctrl-C (or SIGTERM) runs `lab.sh down`, which stops every process
# by PID. A lab left by a run that was killed hard is taken down first.
#
# The lab lives in .lab/ at the repository root (or under /var/tmp when
# the `postgres` user cannot reach the checkout), the default of
# `meridianctl lab`, so `meridianctl lab status` and the drills'
# `--lab-dir` find it.
set -euo pipefail

build=$(realpath "${1:?usage: run-local.sh BUILD_DIR}")
root=$(cd "$(dirname "$0")/.." && pwd)
labsh="$root/scripts/lab.sh"
export MERIDIAN_BIN_DIR="$build"

die() { echo "run-local: $*" >&2; exit 1; }
for b in meridianctl meridiand meridian-keeper meridian-netem; do
  [ -x "$build/$b" ] || die "no $b in $build: build first (make build)"
done

# A lab left by a run that was killed hard: stop it by its PIDs.
bash "$labsh" down >/dev/null 2>&1 || true

up=0
cleanup() {
  trap - INT TERM EXIT
  if [ "$up" = 1 ]; then
    echo
    echo "run-local: taking the lab down (every process by PID)"
    bash "$labsh" down || true
  fi
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

echo "run-local: starting the two-region lab (topologies/lab.json; about a minute on 2 cores)"
up=1
bash "$labsh" up || die "the lab did not come up (see the lines above; logs under the lab's logs/)"
dir=$(bash "$labsh" dir)
dir=${dir#"$root"/}
ctl="${build#"$root"/}/meridianctl"

cat <<EOF

Operate it:
  $ctl lab status                      # processes, each cell's leader, endpoints, WAN links
  $ctl --config $dir/cells/us/meridiand.conf status --cell us
  $ctl lab fault node-kill us-n1       # kill cell us's primary: in-region failover
  $ctl drill region-loss               # a drill on a lab of its own (see docs/DRILLS.md)

More: docs/LAB.md, docs/DRILLS.md, docs/FAILOVER.md, docs/API.md.
Stop with Ctrl-C (stops everything by PID).
EOF

# Wait until Ctrl-C; notice when the lab is taken down from elsewhere
# (`meridianctl lab down`).
# A check killed by the same signal as this script (Ctrl-C reaches the
# whole process group) exits above 128: that is not "the lab is gone",
# and the trap must still take the lab down.
while :; do
  rc=0; bash "$labsh" env >/dev/null 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then break; fi
  sleep 2
done
up=0
echo "run-local: the lab was taken down elsewhere; exiting" >&2
