#!/usr/bin/env bash
# `make stop`: ends every process `make run` started (services first, then Redis and NATS).
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-target/run}
[ -f "$RUN_DIR/pids" ] || { echo "nothing running"; exit 0; }
tac "$RUN_DIR/pids" | while read -r pid name; do
  kill -TERM "$pid" 2>/dev/null && echo "stopping $name ($pid)"
done
for _ in $(seq 1 50); do
  alive=0
  while read -r pid _; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$RUN_DIR/pids"
  [ $alive = 0 ] && break
  sleep 0.1
done
while read -r pid _; do kill -KILL "$pid" 2>/dev/null; done <"$RUN_DIR/pids"
rm -f "$RUN_DIR/pids"
echo "stopped"
