#!/usr/bin/env bash
# Installs the servers mabeam's tests and `make run` need: nats-server (JetStream) and
# redis-server, from the OS packages, and openssl (the security tests make certificates with
# deploy/nats/gen-certs.sh); then the tools `make k8s-validate` needs (kubectl,
# prometheus/promtool, kubernetes-validate). Installs only what is missing.
set -euo pipefail

missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
install_servers=true
if [ ${#missing[@]} -eq 0 ]; then
  echo "nats-server, redis-server and openssl present"
  install_servers=false
fi

sudo=""
if [ "$install_servers" = true ] && [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "need root to install ${missing[*]}: run as root or install them yourself" >&2
    exit 1
  fi
fi
if [ "$install_servers" = false ]; then
  :
elif command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start system services; mabeam starts its own on its own ports.
  for svc in nats-server redis-server; do
    $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
elif command -v brew >/dev/null 2>&1; then
  brew install nats-server redis openssl
else
  echo "cannot install ${missing[*]}: no apt-get or brew; install them by hand" >&2
  exit 1
fi
if [ "$install_servers" = true ]; then echo "installed ${missing[*]}"; fi

# make k8s-validate: kubectl (Debian's kubernetes-client; any kubectl with `kustomize`
# works), prometheus + promtool, and the kubernetes-validate schema checker from PyPI.
tools=()
command -v kubectl >/dev/null 2>&1 || tools+=(kubernetes-client)
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || tools+=(prometheus)
python3 -c 'import yaml' >/dev/null 2>&1 || tools+=(python3-yaml)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || tools+=(python3-pip)
if [ ${#tools[@]} -gt 0 ]; then
  root=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root to install ${tools[*]}" >&2; exit 1; }
    root="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "cannot install ${tools[*]}: no apt-get; install them by hand" >&2; exit 1; }
  $root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $root apt-get install -y -qq "${tools[@]}" >/dev/null
  # The prometheus package starts a system service; the tests start their own.
  $root systemctl disable --now prometheus >/dev/null 2>&1 || true
  $root service prometheus stop >/dev/null 2>&1 || true
  echo "installed ${tools[*]}"
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  pip=$(command -v pip3 || command -v pip)
  # Debian's system Python refuses global pip installs (PEP 668) unless told otherwise.
  "$pip" install -q kubernetes-validate 2>/dev/null || "$pip" install -q --break-system-packages kubernetes-validate
  command -v kubernetes-validate >/dev/null 2>&1 || { echo "kubernetes-validate installed but not on PATH (add ~/.local/bin)" >&2; exit 1; }
  echo "installed kubernetes-validate"
fi
