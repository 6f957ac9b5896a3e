package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the command line in process with env set (TASKD_ variables of
// the caller's environment are cleared first).
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "TASKD_") {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCommandLineErrors(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badYAML, []byte("rules:\n  - name: a\n    match: GET /\n    limits: 5/fortnight\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	db := "sqlite:" + filepath.Join(dir, "t.db")
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"unknown command", nil, []string{"launch"}, []string{`unknown command "launch"`, "Usage:"}},
		{"unknown flag", nil, []string{"-port", "80"}, []string{"flag provided but not defined: -port"}},
		{"stray argument", nil, []string{"serve", "now"}, []string{`unexpected argument "now"`}},
		{"negative workers", nil, []string{"-workers", "-1"}, []string{"-workers -1: expected 0 or more"}},
		{"workers not a number", nil, []string{"-workers", "many"}, []string{`invalid value "many"`}},
		{"bad env workers", map[string]string{"TASKD_WORKERS": "many"}, []string{"serve"}, []string{`TASKD_WORKERS="many"`}},
		{"bad addr", nil, []string{"-addr", "localhost"}, []string{`-addr "localhost": expected host:port`}},
		{"bad env addr", map[string]string{"TASKD_ADDR": "nowhere"}, nil, []string{`-addr "nowhere"`}},
		{"two redis", nil, []string{"-redis", "redis://127.0.0.1:1/0", "-redis-cluster", "127.0.0.1:2"}, []string{"both set"}},
		{"redis not a url", nil, []string{"-redis", "127.0.0.1:6379"}, []string{"expected a URL redis://host:port/db"}},
		{"bad cluster node", nil, []string{"-redis-cluster", "127.0.0.1:1,nohost"}, []string{`node "nohost": expected host:port`}},
		{"bad db scheme", nil, []string{"-db", "mysql://u:secret@h/db"}, []string{`unknown scheme "mysql"`}},
		{"bad log format", nil, []string{"-log-format", "xml"}, []string{`-log-format "xml"`}},
		{"bad log level", nil, []string{"-log-level", "loud"}, []string{`-log-level "loud"`}},
		{"missing config", nil, []string{"-config", filepath.Join(dir, "none.yaml")}, []string{"none.yaml", "no such file"}},
		{"bad config", nil, []string{"-db", db, "-config", badYAML}, []string{badYAML + ":4:13:", `unknown time unit "fortnight"`}},
		{"keys without create", nil, []string{"keys"}, []string{"expected the subcommand create"}},
		{"keys without user", nil, []string{"keys", "create", "-db", db}, []string{"-user is required"}},
		{"keys bad user", nil, []string{"keys", "create", "-user", "a b", "-db", db}, []string{`user name "a b"`}},
		{"migrate bad db", nil, []string{"migrate", "-db", "redis://x"}, []string{`unknown scheme "redis"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.env, tt.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "secret") {
				t.Errorf("stderr shows a password:\n%s", stderr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"keys", "create", "-h"}, {"migrate", "-h"}} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != 0 || !strings.Contains(stdout+stderr, "Usage") {
			t.Errorf("taskd %s: exit %d, output %q", strings.Join(args, " "), code, stdout+stderr)
		}
	}
}

// The command line wins over the environment, and the environment over the
// defaults: keys create finds its database in TASKD_DB, and a bad
// TASKD_WORKERS is ignored when -workers is given.
func TestEnvironment(t *testing.T) {
	dir := t.TempDir()
	envDB := filepath.Join(dir, "env.db")
	code, stdout, stderr := runCLI(t, map[string]string{"TASKD_DB": "sqlite:" + envDB}, "keys", "create", "-user", "alice")
	if code != 0 || !strings.HasPrefix(stdout, "tk_") || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("keys create with TASKD_DB: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	if _, err := os.Stat(envDB); err != nil {
		t.Fatalf("TASKD_DB was not used: %v", err)
	}
	flagDB := filepath.Join(dir, "flag.db")
	if code, _, stderr := runCLI(t, map[string]string{"TASKD_DB": "sqlite:" + envDB}, "migrate", "-db", "sqlite:"+flagDB); code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(flagDB); err != nil {
		t.Fatalf("-db did not win over TASKD_DB: %v", err)
	}
	f, err := parseServe([]string{"-workers", "3"}, &bytes.Buffer{})
	if err == nil {
		t.Setenv("TASKD_WORKERS", "many")
		f, err = parseServe([]string{"-workers", "3"}, &bytes.Buffer{})
	}
	if err != nil || f.workers != 3 {
		t.Fatalf("-workers 3 with TASKD_WORKERS=many: %+v, %v", f, err)
	}
	t.Setenv("TASKD_WORKERS", "7")
	t.Setenv("TASKD_REDIS_CLUSTER", "127.0.0.1:7000,127.0.0.1:7001")
	if f, err = parseServe(nil, &bytes.Buffer{}); err != nil || f.workers != 7 || f.redisCluster != "127.0.0.1:7000,127.0.0.1:7001" || f.addr != "127.0.0.1:8080" || f.db != "sqlite:"+envDB {
		t.Fatalf("from the environment: %+v, %v", f, err)
	}
}
