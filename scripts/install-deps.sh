#!/usr/bin/env bash
# install-deps.sh — install every Debian package Meridian needs to build,
# test, run and benchmark. Idempotent: does nothing when all are present.
# Called by `make run`, `make test` and `make bench`.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libpq-dev libmicrohttpd-dev libjansson-dev libsodium-dev libcmocka-dev
  libcurl4-openssl-dev
  postgresql-15
  etcd-server etcd-client redis-server haproxy
  curl jq procps iproute2 prometheus bc
  socat
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's postgresql/etcd/redis packages try to start system services;
# in containers without an init this fails harmlessly, and Meridian never
# uses those instances (it starts its own, by PID, on its own ports).
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
