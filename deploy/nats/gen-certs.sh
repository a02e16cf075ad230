#!/usr/bin/env bash
# Makes a development certificate set with openssl: a CA, a server certificate for
# localhost/127.0.0.1 (plus any names given) and a client certificate, all signed by the CA.
# For tests and local runs only; production certificates come from your PKI.
#
#   gen-certs.sh OUT_DIR [SERVER_NAME]...
#
# Writes OUT_DIR/{ca,server,client}.pem and their *-key.pem (private keys, mode 600).
set -euo pipefail

[[ $# -ge 1 ]] || { sed -n '2,8p' "$0" >&2; exit 2; }
out=$1
shift
mkdir -p "$out"
cd "$out"
umask 077

san="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do san="$san,DNS:$name"; done

openssl req -x509 -newkey rsa:2048 -nodes -days 30 -sha256 \
  -keyout ca-key.pem -out ca.pem -subj "/CN=mabeam development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null

# leaf NAME CN EXTENDED_KEY_USAGE [SAN]
leaf() {
  local ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$3"
  [[ -n "${4:-}" ]] && ext="$ext
subjectAltName=$4"
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -sha256 \
    -extfile <(printf '%s\n' "$ext") -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}

leaf server "mabeam server" serverAuth "$san"
leaf client "mabeam client" clientAuth
rm -f ca.srl
chmod 644 ca.pem server.pem client.pem
echo "certificates in $PWD"
