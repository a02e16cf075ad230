#!/usr/bin/env bash
# `make run`: the whole mabeam stack on loopback from release binaries — nats-server with
# JetStream, redis-server, registry, two coordinators, fault-injector, telemetry and an
# agent-sim fleet with some Byzantine agents — then a demo submitting one task of every
# algorithm with faults injected. The stack stays up until Ctrl-C; `make stop` also ends it.
#
# Ports (override by env): NATS_PORT 4222, NATS_MONITOR_PORT 8222, REDIS_PORT 6379,
# HTTP_BASE 9100 (registry +1, coordinators +2 +3, fault-injector +4, telemetry +5,
# agent-sim +6; the fault proxies listen on NATS_PORT+10000 and REDIS_PORT+10000).
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_PORT=${NATS_PORT:-4222}
NATS_MONITOR_PORT=${NATS_MONITOR_PORT:-8222}
REDIS_PORT=${REDIS_PORT:-6379}
HTTP_BASE=${HTTP_BASE:-9100}
AGENTS=${AGENTS:-24}
RUN_DIR=${RUN_DIR:-target/run}
BIN=${BIN:-target/release}

deploy/install-deps.sh
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked --bins
fi

"$(dirname "$0")/stop-local.sh" >/dev/null 2>&1 || true
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR/nats" "$RUN_DIR/redis" "$RUN_DIR/logs"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$NATS_PORT" "$REDIS_PORT" $(seq $((HTTP_BASE + 1)) $((HTTP_BASE + 6))); do
  port_free "$p" || { echo "port $p is in use; set NATS_PORT/REDIS_PORT/HTTP_BASE or run make stop" >&2; exit 1; }
done

start() { # name, command...
  local name=$1; shift
  "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$RUN_DIR/pids"
}
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
redis_bin=$(command -v redis-server || echo /usr/bin/redis-server)
start nats "$nats_bin" -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -sd "$RUN_DIR/nats"
start redis "$redis_bin" --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN_DIR/redis" --save "" --appendonly no

cleanup() { "$(dirname "$0")/stop-local.sh"; }
trap cleanup INT TERM

export MABEAM_NATS_URL="nats://127.0.0.1:$NATS_PORT"
export MABEAM_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export MABEAM_LOG_FORMAT=json
svc() { # name, port offset, binary, extra env...
  local name=$1 off=$2 bin=$3; shift 3
  start "$name" env MABEAM_INSTANCE="$name" MABEAM_HTTP_ADDR="127.0.0.1:$((HTTP_BASE + off))" "$@" "$BIN/$bin"
}
svc registry 1 mabeam-registry
svc coordinator-1 2 mabeam-coordinator
svc coordinator-2 3 mabeam-coordinator
svc fault-injector 4 mabeam-fault-injector \
  MABEAM_PROXY_NATS_LISTEN="127.0.0.1:$((NATS_PORT + 10000))" MABEAM_PROXY_NATS_UPSTREAM="127.0.0.1:$NATS_PORT" \
  MABEAM_PROXY_REDIS_LISTEN="127.0.0.1:$((REDIS_PORT + 10000))" MABEAM_PROXY_REDIS_UPSTREAM="127.0.0.1:$REDIS_PORT"
svc telemetry 5 mabeam-telemetry
svc agent-sim 6 mabeam-agent-sim MABEAM_SIM_AGENTS="$AGENTS" MABEAM_SIM_ID_PREFIX=agent \
  MABEAM_SIM_CAPABILITIES=general,reasoning MABEAM_SIM_PROFILE=consensus MABEAM_SIM_NOISE=0 \
  MABEAM_SIM_BYZANTINE_SHARE=0.125 MABEAM_SIM_BYZANTINE_BEHAVIOUR=equivocate

wait_ready() { # name port
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$2/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not become ready; see $RUN_DIR/logs/$1.log" >&2
  cleanup
  exit 1
}
for i in 1 2 3 4 5 6; do
  wait_ready "$(sed -n "$((i + 2))p" "$RUN_DIR/pids" | cut -d' ' -f2)" $((HTTP_BASE + i))
done

echo
echo "mabeam is up"
echo "  NATS        nats://127.0.0.1:$NATS_PORT   (monitor http://127.0.0.1:$NATS_MONITOR_PORT)"
echo "  Redis       redis://127.0.0.1:$REDIS_PORT"
for pair in "registry 1" "coordinator-1 2" "coordinator-2 3" "fault-injector 4" "telemetry 5" "agent-sim 6"; do
  set -- $pair
  printf '  %-15s http://127.0.0.1:%s/metrics\n' "$1" $((HTTP_BASE + $2))
done
echo "  logs        $RUN_DIR/logs/"
echo

"$BIN/mabeamctl" --nats-url "$MABEAM_NATS_URL" demo --min-agents $((AGENTS - AGENTS / 8)) || echo "demo reported failures (see above)"

echo
echo "stack running; Ctrl-C (or make stop) to stop it"
while kill -0 "$(head -1 "$RUN_DIR/pids" | cut -d' ' -f1)" 2>/dev/null; do sleep 1; done
cleanup
