# Shared by the load and measurement scripts of bench/cmd (sourced, not run):
# loopback ports for the servers they start.

# free_port prints a loopback port nothing listens on, below Linux's
# ephemeral range (32768 and up by default), where the outgoing connections
# of wrk and the Redis clients could take it between this check and the
# server's bind.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

# wait_port waits up to $2 seconds (default 10) for something to listen on
# port $1. With $3, the pid of the process that should listen, and $4, its
# log, it stops as soon as that process has exited and prints the log.
wait_port() {
  local tries=$(( ${2:-10} * 10 ))
  for _ in $(seq 1 "$tries"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then
      echo "$(basename "$0"): the server for port $1 exited${4:+; its log:}" >&2
      [ -n "${4:-}" ] && cat "$4" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$(basename "$0"): nothing listens on port $1" >&2
  return 1
}
