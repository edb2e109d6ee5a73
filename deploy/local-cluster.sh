#!/usr/bin/env bash
# Starts N servers (default 3) on 127.0.0.21, .22, … with data under
# ./.pontoon-cluster, logs beside the data. Stop them with Ctrl-C.
set -euo pipefail
n=${1:-3}
bin=${PONTOON:-./bin/pontoon}
dir=${DATA:-./.pontoon-cluster}
joins=()
for i in $(seq 1 "$n"); do joins+=(--join "127.0.0.$((20 + i)):7946"); done
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for i in $(seq 1 "$n"); do
  ip=127.0.0.$((20 + i))
  mkdir -p "$dir"
  "$bin" server --name "s$i" --data-dir "$dir/s$i" --api-addr "$ip:6443" --raft-addr "$ip:6444" \
    --gossip-addr "$ip:7946" --bootstrap-expect "$n" "${joins[@]}" >"$dir/s$i.log" 2>&1 &
  pids+=($!)
  echo "s$i: http://$ip:6443 (log: $dir/s$i.log)"
done
wait
