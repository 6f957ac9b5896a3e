#!/usr/bin/env bash
# Loopback load test of the HTTP middleware: wrk against loadserver in each
# mode (bare handler; httplimit over memstore; httplimit over Redis; ulule's
# limiter over Redis), for a few seconds each, in rounds that interleave the
# modes. Prints requests/s per run, the best per mode and the ratios the
# targets are about. Starts its own redis-server on a free port; stops
# everything it started when it ends.
#
#	bench/cmd/loadserver/run.sh [seconds per run, default 5] [rounds, default 2]
#
# Needs wrk (apt-get install -y wrk), redis-server and Go. Run it on an idle
# machine: wrk, the server and Redis share its cores.
set -euo pipefail
cd "$(dirname "$0")"
dur=${1:-5}
rounds=${2:-2}
modes=(bare memstore redis ulule)
for bin in wrk redis-server go; do
  command -v "$bin" >/dev/null || { echo "run.sh: $bin is missing (wrk: apt-get install -y wrk; redis-server: apt-get install -y redis-server)" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# free_port prints a loopback port nothing listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

# wait_port waits up to 10 s for something to listen on port $1.
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run.sh: nothing listens on port $1" >&2
  return 1
}

go build -o "$tmp/loadserver" .
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_port "$rport"

declare -A best
printf '%-10s %s\n' mode "requests/s per round"
for round in $(seq 1 "$rounds"); do
  for mode in "${modes[@]}"; do
    port=$(free_port)
    # ulule counts in fixed windows; httplimit over Redis does the same here.
    alg=sliding-window
    [ "$mode" = redis ] && alg=fixed-window
    "$tmp/loadserver" -mode "$mode" -algorithm "$alg" -addr "127.0.0.1:$port" -redis "127.0.0.1:$rport" 2>"$tmp/$mode.log" &
    spid=$!
    pids+=("$spid")
    wait_port "$port"
    rps=$(timeout $((dur + 20)) wrk -t1 -c50 -d"${dur}s" -s users.lua "http://127.0.0.1:$port/" | awk '/^Requests\/sec:/ {print $2}')
    kill "$spid"
    wait "$spid" 2>/dev/null || true
    printf '%-10s round %d: %s\n' "$mode" "$round" "$rps"
    if [ -z "${best[$mode]:-}" ] || awk -v a="$rps" -v b="${best[$mode]}" 'BEGIN {exit !(a > b)}'; then
      best[$mode]=$rps
    fi
  done
done

echo
for mode in "${modes[@]}"; do printf '%-10s best %s requests/s\n' "$mode" "${best[$mode]}"; done
awk -v m="${best[memstore]}" -v b="${best[bare]}" -v r="${best[redis]}" -v u="${best[ulule]}" 'BEGIN {
  printf "memstore / bare  = %.2f (target >= 0.90)\n", m / b
  printf "redis / ulule    = %.2f (target >= 1.50)\n", r / u
}'
