// Command taskd is a task API with one active task per user, rate limited
// with allowance, that gives the attempt back when a submit conflicts with
// the user's active task.
//
// Usage:
//
//	taskd [serve] [-addr ADDR] [-metrics-addr ADDR] [-tls-cert FILE -tls-key FILE] [-config FILE] [-db DSN] [-redis URL | -redis-cluster ADDRS] [-workers N] [-trusted-proxies PREFIXES]
//	taskd keys create -user NAME [-db DSN]
//	taskd keys list [-user NAME] [-db DSN]
//	taskd keys revoke -id KEY_ID[,KEY_ID...] | -user NAME [-db DSN]
//	taskd keys rotate -user NAME [-grace DURATION] [-db DSN]
//	taskd migrate [-db DSN]
//	taskd version (or taskd -version)
//	taskd help (or taskd -h)
//
// Every flag can also be set by an environment variable, TASKD_ and the
// flag's name in upper case with '-' as '_' (TASKD_ADDR, TASKD_DB,
// TASKD_REDIS_CLUSTER, ...); a flag on the command line wins over the
// variable. Bad flags, variables, configuration or TLS files exit with
// status 2; a failure while running exits with status 1; help and version
// exit with 0. See docs/taskd.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/allowancehq/allowance/app/internal/api"
	"github.com/allowancehq/allowance/app/internal/config"
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
  taskd version                   print the version and VCS revision (also: taskd -version)
  taskd help                      show this text (also: taskd -h)

Run "taskd serve -h", "taskd keys create -h" or "taskd migrate -h" for the flags.
Every flag can be set by an environment variable: TASKD_ADDR, TASKD_METRICS_ADDR,
TASKD_TLS_CERT, TASKD_TLS_KEY, TASKD_CONFIG, TASKD_DB, TASKD_REDIS,
TASKD_REDIS_CLUSTER, TASKD_WORKERS, TASKD_TRUSTED_PROXIES, TASKD_LOG_FORMAT,
TASKD_LOG_LEVEL.

Exit status: 0 done (or help, version); 1 a failure while running (the
database or Redis cannot be reached, the address is in use); 2 a bad command,
flag, variable, configuration file or TLS file.
`

// run runs the taskd command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd, rest := "serve", args
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, rest = args[0], args[1:]
	}
	if len(args) > 0 {
		// The default command's flags would take these for its own.
		switch args[0] {
		case "-h", "-help", "--help":
			cmd = "help"
		case "-version", "--version":
			cmd = "version"
		}
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
		if len(args) > 0 && args[0] != "help" {
			// taskd -h: the flags of serve, the command it would run.
			fmt.Fprintln(stdout)
			_, _ = parseServe([]string{"-h"}, stdout)
		}
		return 0
	case "version":
		bi, ok := debug.ReadBuildInfo()
		fmt.Fprintln(stdout, versionText(bi, ok))
		return 0
	default:
		err = usagef("taskd: unknown command %q; expected serve, keys create, migrate, version or help", cmd)
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

// versionText returns what taskd -version prints: the module version, the
// VCS revision and time it was built from (with "modified" when the work
// tree had changes), and the Go version, from the binary's build info.
// go build and go install in a git checkout stamp the revision; go run and
// go test do not, and it is then "unknown".
func versionText(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "taskd (no build information)"
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "taskd %s", version)
	if rev == "" {
		b.WriteString(" revision unknown")
	} else {
		fmt.Fprintf(&b, " revision %s", rev)
		if at != "" {
			fmt.Fprintf(&b, " (%s)", at)
		}
		if modified {
			b.WriteString(" modified")
		}
	}
	fmt.Fprintf(&b, " %s", bi.GoVersion)
	return b.String()
}

// limitedRoutes returns the routes the rate limiter is in front of (those
// that need an API key): the routes a rule's pattern must match one of
// (config.WithRoutes).
func limitedRoutes() []config.Route {
	var out []config.Route
	for _, r := range api.Routes() {
		if r.Auth {
			out = append(out, config.Route{Method: r.Method, Path: r.Path})
		}
	}
	return out
}
