# Shared by the load and measurement scripts of bench/cmd (sourced, not run):
# loopback ports for the servers they start.

# free_port prints a loopback port nothing listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

# wait_port waits up to $2 seconds (default 10) for something to listen on
# port $1.
wait_port() {
  local tries=$(( ${2:-10} * 10 ))
  for _ in $(seq 1 "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$(basename "$0"): nothing listens on port $1" >&2
  return 1
}
