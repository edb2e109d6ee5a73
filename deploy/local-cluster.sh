#!/usr/bin/env bash
# Usage: deploy/local-cluster.sh [SERVERS [AGENTS]]
#
# Without agents: SERVERS servers (default 3) on 127.0.0.21, .22, …
#
# With agents (as root): a network of its own, as DESIGN.md's tests lay it
# out. The servers run in the network namespace pontoon-lc on a bridge at
# 10.250.0.1, .2, …; each agent runs in a namespace pontoon-lc-nI with a
# veth on that bridge at 10.250.0.(10+I) and a containerd of its own.
# No namespace has a route out. kubectl reaches the servers through the
# wrapper DATA/kubectl.
#
# Data and logs go under DATA (default ./.pontoon-cluster), and the
# cluster's join token in DATA/token. Ctrl-C stops
# everything, removes the agents' pods, containers and mounts with
# `pontoon agent cleanup`, and deletes the namespaces.
set -euo pipefail
servers=${1:-3}
agents=${2:-0}
bin=$(realpath "${PONTOON:-./bin/pontoon}")
dir=$(realpath -m "${DATA:-./.pontoon-cluster}")
net=pontoon-lc
prefix=10.250.0.
mkdir -p "$dir"
# The cluster's join token: every server and agent is given it.
if [ ! -s "$dir/token" ]; then
  (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/token")
fi
token=(--token-file "$dir/token")

if [ "$agents" -eq 0 ]; then
  joins=()
  for i in $(seq 1 "$servers"); do joins+=(--join "127.0.0.$((20 + i)):7946"); done
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
  for i in $(seq 1 "$servers"); do
    ip=127.0.0.$((20 + i))
    "$bin" server --name "s$i" --data-dir "$dir/s$i" --api-addr "$ip:6443" --raft-addr "$ip:6444" \
      --gossip-addr "$ip:7946" --bootstrap-expect "$servers" "${joins[@]}" "${token[@]}" >"$dir/s$i.log" 2>&1 &
    pids+=($!)
    echo "s$i: http://$ip:6443 (log: $dir/s$i.log)"
  done
  wait
  exit
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "local-cluster.sh: agents need root (network namespaces, containerd)" >&2
  exit 1
fi
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

server_pids=()
agent_pids=()
stop() {
  trap - EXIT INT TERM
  for p in "${agent_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${agent_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for i in $(seq 1 "$agents"); do
    if [ -d "$dir/n$i" ]; then
      in_ns "$net-n$i" "$bin" agent cleanup --name "n$i" --data-dir "$dir/n$i" >>"$dir/n$i.log" 2>&1 ||
        echo "cleanup of n$i failed: see $dir/n$i.log" >&2
    fi
  done
  for p in "${server_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait
  for i in $(seq 1 "$agents"); do ip netns del "$net-n$i" 2>/dev/null || true; done
  ip netns del "$net" 2>/dev/null || true
  if [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then umount /run/netns 2>/dev/null || true; fi
}
trap stop EXIT INT TERM

# The hub: a bridge whose addresses the servers listen on.
ip netns add "$net"
ip -n "$net" link set lo up
ip -n "$net" link add br0 type bridge
ip -n "$net" link set br0 up
joins=()
for i in $(seq 1 "$servers"); do
  ip -n "$net" addr add "$prefix$i/24" dev br0
  joins+=(--join "$prefix$i:7946")
done
for i in $(seq 1 "$servers"); do
  ip=$prefix$i
  # nsenter itself in the background (not a shell function, which would
  # run in a subshell): $! is then the server, which nsenter becomes.
  nsenter --net="/run/netns/$net" "$bin" server --name "s$i" --data-dir "$dir/s$i" --api-addr "$ip:6443" --raft-addr "$ip:6444" \
    --gossip-addr "$ip:7946" --bootstrap-expect "$servers" "${joins[@]}" "${token[@]}" >"$dir/s$i.log" 2>&1 &
  server_pids+=($!)
  echo "s$i: http://$ip:6443 (log: $dir/s$i.log)"
done

# The nodes: a namespace each, its veth made in the hub and moved in, so
# the root namespace never holds either end.
for i in $(seq 1 "$agents"); do
  ns=$net-n$i
  ip=$prefix$((10 + i))
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$net" link add "veth$i" type veth peer name "eth$i"
  ip -n "$net" link set "eth$i" netns "$ns"
  ip -n "$net" link set "veth$i" master br0 up
  ip -n "$ns" link set "eth$i" name eth0
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  nsenter --net="/run/netns/$ns" "$bin" agent --name "n$i" --data-dir "$dir/n$i" --node-ip "$ip" "${joins[@]}" "${token[@]}" >"$dir/n$i.log" 2>&1 &
  agent_pids+=($!)
  echo "n$i: node IP $ip, namespace $ns (log: $dir/n$i.log)"
done

"$bin" kubeconfig --server "http://${prefix}1:6443" >"$dir/kubeconfig"
cat >"$dir/kubectl" <<EOF
#!/bin/sh
# kubectl in the namespace where the servers listen.
exec nsenter --net=/run/netns/$net kubectl --kubeconfig "$dir/kubeconfig" "\$@"
EOF
chmod +x "$dir/kubectl"
echo "kubectl: $dir/kubectl get nodes"
wait
