// Command taskd is a task API with one active task per user, rate limited
// with allowance, that gives the attempt back when a submit conflicts with
// the user's active task.
//
// Usage:
//
//	taskd [serve] [-addr ADDR] [-metrics-addr ADDR] [-config FILE] [-db DSN] [-redis URL | -redis-cluster ADDRS] [-workers N] [-trusted-proxies PREFIXES]
//	taskd keys create -user NAME [-db DSN]
//	taskd keys list [-user NAME] [-db DSN]
//	taskd keys revoke -id KEY_ID[,KEY_ID...] | -user NAME [-db DSN]
//	taskd keys rotate -user NAME [-grace DURATION] [-db DSN]
//	taskd migrate [-db DSN]
//
// Every flag can also be set by an environment variable, TASKD_ and the
// flag's name in upper case with '-' as '_' (TASKD_ADDR, TASKD_DB,
// TASKD_REDIS_CLUSTER, ...); a flag on the command line wins over the
// variable. Bad flags, variables or configuration exit with status 2; a
// failure while running exits with status 1. See docs/taskd.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, the default handling comes back: a
		// second Ctrl-C ends the process at once. Its running tasks keep
		// their leases until they expire and a reaper queues them again.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is an error in how taskd was invoked: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

const usage = `taskd: a rate-limited task API that refunds attempts rejected with 409 Conflict.

Usage:
  taskd [serve] [flags]           run the API server (the default command)
  taskd keys create -user NAME    create an API key; prints it as the only line on stdout
  taskd keys list                 list API keys: user, key id, created, last used, expires
  taskd keys revoke -id KEY_ID    revoke keys (or every key of -user NAME)
  taskd keys rotate -user NAME    create a new key; old ones keep working for -grace (24h)
  taskd migrate                   create or update the task database's schema
  taskd help                      show this text

Run "taskd serve -h", "taskd keys create -h" or "taskd migrate -h" for the flags.
Every flag can be set by an environment variable: TASKD_ADDR, TASKD_METRICS_ADDR,
TASKD_CONFIG, TASKD_DB, TASKD_REDIS, TASKD_REDIS_CLUSTER, TASKD_WORKERS,
TASKD_TRUSTED_PROXIES, TASKD_LOG_FORMAT, TASKD_LOG_LEVEL.
`

// run runs the taskd command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd, rest := "serve", args
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, rest = args[0], args[1:]
	}
	var err error
	showUsage := false
	switch cmd {
	case "serve":
		err = serve(ctx, rest, stderr)
	case "keys":
		err = keys(ctx, rest, stdout, stderr)
	case "migrate":
		err = migrate(ctx, rest, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usagef("taskd: unknown command %q; expected serve, keys create, migrate or help", cmd)
		showUsage = true
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, err)
		if showUsage {
			fmt.Fprint(stderr, "\n"+usage)
		}
		return 2
	default:
		fmt.Fprintln(stderr, "taskd:", err)
		return 1
	}
}
