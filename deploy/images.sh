#!/usr/bin/env bash
# `make images`: builds mabeam's container images with no registry access. Each image is a
# tarball holding one binary and exactly the shared libraries `ldd` lists for it (plus a
# passwd entry for the non-root user, CA certificates and a writable /data), turned into an
# image by `docker import`. The services come from this workspace's build; NATS, Redis and
# Prometheus from this machine's own packages (deploy/install-deps.sh installs them).
#
# An image is rebuilt only when its content changed: the tarball is built reproducibly and its
# sha256 is kept as the label org.mabeam.content-sha256, compared before importing.
#
# Usage: deploy/images.sh [--profile release|debug] [--tag TAG] [--only name,name]
# Env:   IMAGE_PREFIX (default "mabeam/"), TARGET_DIR (default "target")
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
tag=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
only=""
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
prefix=${IMAGE_PREFIX:-mabeam/}
target_dir=${TARGET_DIR:-target}
bin_dir="$target_dir/$profile"
[ "$profile" = dev ] && bin_dir="$target_dir/debug"
work="$target_dir/images"
mkdir -p "$work"

command -v docker >/dev/null || { echo "docker is not installed" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "no Docker engine reachable (docker info failed)" >&2; exit 1; }

# The uid/gid distroless uses for "nonroot", so the user-facing Dockerfiles and these images
# run as the same user and the Kubernetes securityContext fits both.
NONROOT=65532

wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# build_image NAME BINARY VERSION_LABEL [docker import --change ...]...
build_image() {
  local name=$1 binary=$2 version=$3; shift 3
  local image="${prefix}${name}:${tag}"
  [ -x "$binary" ] || { echo "$binary is missing: build it first" >&2; exit 1; }
  local root="$work/$name.rootfs"
  rm -rf "$root"
  mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/data"
  local exe
  exe="$root/usr/local/bin/$(basename "$binary")"
  cp -L "$binary" "$exe"
  # Debug info is for the build machine; the image keeps symbols for backtraces.
  strip --strip-debug "$exe" 2>/dev/null || true
  # The dynamic loader and every library ldd resolves, at the paths ldd names.
  ldd "$binary" 2>/dev/null | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}' |
    while read -r lib; do cp -L --parents "$lib" "$root/"; done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/data:/sbin/nologin\n' \
    "$NONROOT" "$NONROOT" >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' "$NONROOT" >"$root/etc/group"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true
  chmod 1777 "$root/tmp"
  chown "$NONROOT:$NONROOT" "$root/data"
  local tarball="$work/$name.tar"
  tar --sort=name --mtime=@0 --numeric-owner -C "$root" -cf "$tarball" .
  local sum
  sum=$(sha256sum "$tarball" | cut -d' ' -f1)
  local current
  current=$(docker image inspect -f '{{index .Config.Labels "org.mabeam.content-sha256"}}' "$image" 2>/dev/null || true)
  if [ "$current" = "$sum" ]; then
    echo "$image is up to date"
  else
    docker import \
      --change "USER $NONROOT:$NONROOT" \
      --change "WORKDIR /data" \
      --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" \
      --change "LABEL org.mabeam.content-sha256=$sum" \
      --change "LABEL org.opencontainers.image.title=$name" \
      --change "LABEL org.opencontainers.image.version=$version" \
      --change "LABEL org.opencontainers.image.source=https://github.com/mabeam/mabeam" \
      "$@" "$tarball" "$image" >/dev/null
    echo "$image built ($(du -h "$tarball" | cut -f1) uncompressed)"
  fi
  rm -rf "$root" "$tarball"
}

# Services: one binary each; the defaults point at the service names compose and Kubernetes
# use, so an image runs with no configuration in either.
port=9101
for svc in registry coordinator fault-injector telemetry agent-sim; do
  if wanted "$svc"; then
    build_image "$svc" "$bin_dir/mabeam-$svc" "$tag" \
      --change "ENTRYPOINT [\"/usr/local/bin/mabeam-$svc\"]" \
      --change "ENV MABEAM_HTTP_ADDR=0.0.0.0:$port MABEAM_NATS_URL=nats://nats:4222 MABEAM_REDIS_URL=redis://redis:6379 MABEAM_LOG_FORMAT=json" \
      --change "EXPOSE $port"
  fi
  port=$((port + 1))
done
if wanted mabeamctl; then
  build_image mabeamctl "$bin_dir/mabeamctl" "$tag" \
    --change 'ENTRYPOINT ["/usr/local/bin/mabeamctl"]' \
    --change "ENV MABEAM_NATS_URL=nats://nats:4222"
fi

# Infrastructure from the OS packages. Their entrypoints take flags only, like the official
# images' (`nats -js …`, `redis --save ''`), so one command line fits both.
if wanted nats; then
  nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  build_image nats "$nats_bin" "$("$nats_bin" --version | grep -o 'v[0-9][0-9.]*' | head -1 | tr -d v)" \
    --change 'ENTRYPOINT ["/usr/local/bin/nats-server"]' \
    --change 'CMD ["-js", "-sd", "/data", "-m", "8222"]' \
    --change 'EXPOSE 4222 6222 8222'
fi
if wanted redis; then
  redis_bin=$(command -v redis-server || echo /usr/bin/redis-server)
  build_image redis "$redis_bin" "$("$redis_bin" --version | grep -o 'v=[0-9.]*' | tr -d 'v=')" \
    --change 'ENTRYPOINT ["/usr/local/bin/redis-server"]' \
    --change 'CMD ["--protected-mode", "no", "--dir", "/data"]' \
    --change 'EXPOSE 6379'
fi
# Prometheus is optional (the compose stack's scraper): built when the package is installed.
if wanted prometheus && command -v prometheus >/dev/null; then
  build_image prometheus "$(command -v prometheus)" "$(prometheus --version 2>&1 | grep -o 'version [0-9.]*' | cut -d' ' -f2)" \
    --change 'ENTRYPOINT ["/usr/local/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/data"]' \
    --change 'EXPOSE 9090'
fi
