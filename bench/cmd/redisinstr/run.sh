#!/usr/bin/env bash
# Instructions redis-server executes per call, counted by valgrind's
# callgrind: exact and repeatable (within about 2k instructions from run to
# run), however loaded the machine is, unlike any time. It starts its own
# redis-server under callgrind on a free loopback port, has redisinstr (beside
# it) send each kind of call N times, one at a time, and prints the
# instructions per call of each.
#
#	bench/cmd/redisinstr/run.sh [N, default 2000]
#
# Needs valgrind (apt-get install -y valgrind), redis-server and Go. Sequential
# calls: each pays the server's whole per-request cost (reading, parsing,
# replying), which pipelining shares under load.
set -euo pipefail
cd "$(dirname "$0")"
n=${1:-2000}
for bin in valgrind callgrind_control callgrind_annotate redis-server go; do
  command -v "$bin" >/dev/null || { echo "run.sh: $bin is missing (valgrind: apt-get install -y valgrind; redis-server: apt-get install -y redis-server)" >&2; exit 1; }
done

tmp=$(mktemp -d)
vpid=
cleanup() {
  [ -n "$vpid" ] && kill "$vpid" 2>/dev/null && wait "$vpid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

# free_port, wait_port
. ../ports.sh

go build -o "$tmp/redisinstr" .
port=$(free_port)
valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" \
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/valgrind.log" 2>&1 &
vpid=$!
wait_port "$port" 30 "$vpid" "$tmp/valgrind.log" # valgrind starts slowly

count() {
  "$tmp/redisinstr" -addr "127.0.0.1:$port" -pid "$vpid" -n "$n" "$@"
  local f total
  f=$(ls -t "$tmp"/cg."$vpid".* | head -1)
  total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  rm -f "$f"
  printf '%-56s %8d\n' "$*" $((total / n))
}

printf '%-56s %8s\n' "call" "instructions/call"
count -mode trivial
count -mode check -limits 1
count -mode check -limits 1 -keys 1000
count -mode check -limits 1 -trace=false
count -mode check -limits 3
count -mode check -limits 3 -keys 1000
count -mode refund -limits 1 -keys 1000
count -mode refund -limits 3 -keys 1000
count -mode check -limits 1 -keys 1000 -algorithm fixed-window
count -mode check -limits 1 -keys 1000 -algorithm sliding-window
count -mode ulule
count -mode ulule -keys 1000
count -mode redis_rate
count -mode redis_rate -keys 1000
