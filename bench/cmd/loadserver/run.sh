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
# Besides requests/s it prints the CPU time the server and Redis used per
# request (from /proc), which the load of a shared machine inflates less
# than it cuts requests/s.
#
# Needs wrk (apt-get install -y wrk), redis-server, Go and Linux's /proc. Run
# it on an idle machine: wrk, the server and Redis share its cores.
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

# free_port, wait_port
. ../ports.sh

# cpu_ticks prints the CPU time (user + system, in clock ticks) process $1 used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

go build -o "$tmp/loadserver" .
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
rpid=$!
pids+=("$rpid")
wait_port "$rport" 10 "$rpid" "$tmp/redis.log"

declare -A best cpu
printf '%-10s %-8s %12s %18s %18s\n' mode round requests/s "server µs/request" "redis µs/request"
for round in $(seq 1 "$rounds"); do
  for mode in "${modes[@]}"; do
    port=$(free_port)
    # ulule counts in fixed windows; httplimit over Redis does the same here.
    alg=sliding-window
    [ "$mode" = redis ] && alg=fixed-window
    "$tmp/loadserver" -mode "$mode" -algorithm "$alg" -addr "127.0.0.1:$port" -redis "127.0.0.1:$rport" 2>"$tmp/$mode.log" &
    spid=$!
    pids+=("$spid")
    wait_port "$port" 10 "$spid" "$tmp/$mode.log"
    s0=$(cpu_ticks "$spid")
    r0=$(cpu_ticks "$rpid")
    timeout $((dur + 20)) wrk -t1 -c50 -d"${dur}s" -s users.lua "http://127.0.0.1:$port/" >"$tmp/wrk.out"
    s1=$(cpu_ticks "$spid")
    r1=$(cpu_ticks "$rpid")
    kill "$spid"
    wait "$spid" 2>/dev/null || true
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.out")
    n=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
    scpu=$(awk -v t=$((s1 - s0)) -v hz="$hz" -v n="$n" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    rcpu=$(awk -v t=$((r1 - r0)) -v hz="$hz" -v n="$n" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    printf '%-10s %-8s %12s %18s %18s\n' "$mode" "$round" "$rps" "$scpu" "$rcpu"
    if [ -z "${best[$mode]:-}" ] || awk -v a="$rps" -v b="${best[$mode]}" 'BEGIN {exit !(a > b)}'; then
      best[$mode]=$rps
    fi
    # The least CPU per request (server + Redis) of the rounds.
    tot=$(awk -v a="$scpu" -v b="$rcpu" 'BEGIN {printf "%.1f", a + b}')
    if [ -z "${cpu[$mode]:-}" ] || awk -v a="$tot" -v b="${cpu[$mode]}" 'BEGIN {exit !(a < b)}'; then
      cpu[$mode]=$tot
    fi
  done
done

echo
for mode in "${modes[@]}"; do
  printf '%-10s best %s requests/s, least %s µs of CPU (server + Redis) per request\n' "$mode" "${best[$mode]}" "${cpu[$mode]}"
done
awk -v m="${best[memstore]}" -v b="${best[bare]}" -v r="${best[redis]}" -v u="${best[ulule]}" \
  -v cm="${cpu[memstore]}" -v cb="${cpu[bare]}" -v cr="${cpu[redis]}" -v cu="${cpu[ulule]}" 'BEGIN {
  printf "requests/s:  memstore / bare = %.2f (target >= 0.90), redis / ulule = %.2f (target >= 1.50)\n", m / b, r / u
  printf "CPU/request: bare / memstore = %.2f, ulule / redis = %.2f (the same ratios, from CPU time)\n", cb / cm, cu / cr
}'
