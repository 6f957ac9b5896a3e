package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of %s %s:\n", progName, fs.Name())
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nEach flag can also be set by its environment variable, such as %s.\n", envName("db"))
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usagef("%s %s: %v", progName, fs.Name(), err)
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
