#!/usr/bin/env bash
# Installs the servers mabeam's tests and `make run` need: nats-server (JetStream) and
# redis-server, from the OS packages. Does nothing when both are present.
set -euo pipefail

missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
  echo "nats-server and redis-server present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "need root to install ${missing[*]}: run as root or install them yourself" >&2
    exit 1
  fi
fi
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start system services; mabeam starts its own on its own ports.
  for svc in nats-server redis-server; do
    $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
elif command -v brew >/dev/null 2>&1; then
  brew install nats-server redis
else
  echo "cannot install ${missing[*]}: no apt-get or brew; install them by hand" >&2
  exit 1
fi
echo "installed ${missing[*]}"
