#!/usr/bin/env bash
# Idempotent machine set-up for the demo and the tests: installs what is missing, starts dockerd
# and a single-node swarm when none is running. Safe to run any number of times.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "not root and no sudo: install docker.io, rsync, attr, acl, nix-bin by hand"; fi
fi

# command -> Debian package that provides it
declare -A NEED=(
  [dockerd]=docker.io
  [rsync]=rsync
  [getfattr]=attr
  [setfacl]=acl
  [nix-instantiate]=nix-bin
  [systemd-analyze]=systemd
  [git]=git
  [curl]=curl
  [nginx]=nginx
  [openssl]=openssl
  # The multi-node tests' throw-away swarm (network namespaces, veths, a bridge) and the leftover
  # check after the tests.
  [ip]=iproute2
  [pgrep]=procps
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  logfile=/var/log/ci-warm-dockerd.log
  # setsid: dockerd must outlive this script and not get the terminal's signals.
  $SUDO setsid dockerd >"$logfile" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not come up within 60s; last lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    exit 1
  fi
fi

state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
if [ "$state" != "active" ]; then
  log "initialising a single-node swarm (state was: $state)"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
log "docker $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})') with swarm active"
