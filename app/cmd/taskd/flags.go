package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
)

// errHelp is returned when -h asked for a command's usage: exit status 0.
var errHelp = errors.New("help requested")

// DefaultDB is the task database when neither -db nor TASKD_DB is given: a
// SQLite file in the working directory.
const DefaultDB = "sqlite:taskd.db"

// envName returns the environment variable of flag name: TASKD_ and the
// name in upper case, '-' as '_'.
func envName(name string) string {
	return "TASKD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseFlags parses args into fs, then sets every flag that args did not set
// from its environment variable, so that the command line wins over the
// environment. A bad value, in either place, is a usageError naming where it
// came from.
//
// The flag package's own messages are discarded: a bad flag's error is
// printed once, by run, with a pointer to -h; -h prints the flags.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printFlags(fs, stderr)
			return errHelp
		}
		return usagef("%s %s: %v (see %s %s -h)", progName, fs.Name(), err, progName, fs.Name())
	}
	if fs.NArg() > 0 {
		return usagef("%s %s: unexpected argument %q; every option is a flag (see -h)", progName, fs.Name(), fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || given[f.Name] || envErr != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = usagef("%s %s: environment variable %s=%q: %v", progName, fs.Name(), envName(f.Name), v, err)
		}
	})
	return envErr
}

const progName = "taskd"

// printFlags writes the usage of the command of fs: its flags and their
// environment variables.
func printFlags(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage of %s %s:\n", progName, fs.Name())
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintf(w, "\nEach flag can also be set by its environment variable, such as %s.\n", envName("db"))
}

// dbForms lists the -db values taskd accepts, for messages.
const dbForms = `"sqlite:PATH", "file:PATH" (a SQLite file), or "postgres://user:pass@host:port/db?sslmode=disable" (also postgresql://)`

// checkDB reports a -db value that names no task database taskd can open.
// Only the forms of dbForms are accepted: a bare word such as "postgres"
// would otherwise be a SQLite file of that name, created without a word.
func checkDB(dsn string) error {
	switch {
	case dsn == "":
		return fmt.Errorf("-db is empty; expected %s", dbForms)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return nil
	case strings.HasPrefix(dsn, "sqlite:"), strings.HasPrefix(dsn, "file:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
		switch {
		case path == "":
			return fmt.Errorf("-db %q: the path is empty; expected %s", dsn, dbForms)
		case strings.HasPrefix(path, "//"):
			return fmt.Errorf("-db %q: expected a path after the colon, not a URL with //: such as sqlite:taskd.db or sqlite:/var/lib/taskd/taskd.db", dsn)
		case strings.ContainsRune(path, '?'):
			return fmt.Errorf("-db %q: a SQLite path must not contain '?' (taskd sets its own options)", dsn)
		}
		return nil
	case strings.Contains(dsn, "://"):
		scheme, _, _ := strings.Cut(dsn, "://")
		return fmt.Errorf("-db: unknown scheme %q; expected %s", scheme, dbForms)
	}
	return fmt.Errorf("-db %q is not a database address; expected %s (for a SQLite file of that name: sqlite:%s)", dsn, dbForms, dsn)
}

// checkAddr reports a -addr or -metrics-addr value (the flag name) that
// net.Listen would refuse for its form: not host:port, or a port that is not
// a number from 0 to 65535 or a service name.
func checkAddr(name, addr, example string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		return fmt.Errorf("-%s %q: expected host:port with a port from 0 to 65535, such as %s", name, addr, example)
	}
	return nil
}

// logFlags are the logging flags every command has.
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format on stderr: text or json")
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error (refunds are logged at debug)")
}

// logger returns the logger the flags ask for, writing to w.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usagef("-log-level %q: expected debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("-log-format %q: expected text or json", l.format)
}

// prefixesFlag is a flag of IP addresses and prefixes separated by commas,
// such as "10.0.0.0/8,192.0.2.1"; an address is the prefix of that address
// alone. Setting it again replaces the list.
type prefixesFlag []netip.Prefix

// String returns the list as Set takes it.
func (p *prefixesFlag) String() string {
	s := make([]string, len(*p))
	for i, x := range *p {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

// Set parses a list; an empty one is no prefixes.
func (p *prefixesFlag) Set(v string) error {
	var out prefixesFlag
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if pfx, err := netip.ParsePrefix(item); err == nil {
			out = append(out, pfx.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("%q is not an IP address or prefix; expected a list such as 10.0.0.0/8,192.0.2.1,fd00::/8", item)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	*p = out
	return nil
}
