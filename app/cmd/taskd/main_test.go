package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance/app/tasks"
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
	// A misconfigured limit of failed authentications stops taskd; it
	// never turns the limit off.
	emptyAuth := filepath.Join(dir, "emptyauth.yaml")
	if err := os.WriteFile(emptyAuth, []byte("server:\n  auth_failures: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badAuth := filepath.Join(dir, "badauth.yaml")
	if err := os.WriteFile(badAuth, []byte("server:\n  auth_failures: 0/minute\n"), 0o600); err != nil {
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
		{"bad metrics addr", nil, []string{"-metrics-addr", "9090"}, []string{`-metrics-addr "9090": expected host:port`}},
		{"bad trusted proxy", nil, []string{"-trusted-proxies", "10.0.0.0/8,lb.internal"}, []string{`"lb.internal" is not an IP address or prefix`}},
		{"bad env trusted proxy", map[string]string{"TASKD_TRUSTED_PROXIES": "10.0.0.0/33"}, nil, []string{"TASKD_TRUSTED_PROXIES", `"10.0.0.0/33"`}},
		{"empty auth_failures", nil, []string{"-db", db, "-config", emptyAuth}, []string{emptyAuth + ":2:18:", "server.auth_failures: empty", "or off"}},
		{"bad auth_failures", nil, []string{"-db", db, "-config", badAuth}, []string{badAuth + ":2:18:", "server.auth_failures", `count "0"`}},
		{"two redis", nil, []string{"-redis", "redis://127.0.0.1:1/0", "-redis-cluster", "127.0.0.1:2"}, []string{"both set"}},
		{"redis not a url", nil, []string{"-redis", "127.0.0.1:6379"}, []string{"expected a URL redis://host:port/db"}},
		{"bad cluster node", nil, []string{"-redis-cluster", "127.0.0.1:1,nohost"}, []string{`node "nohost": expected host:port`}},
		{"bad db scheme", nil, []string{"-db", "mysql://u:secret@h/db"}, []string{`unknown scheme "mysql"`}},
		{"bad log format", nil, []string{"-log-format", "xml"}, []string{`-log-format "xml"`}},
		{"bad log level", nil, []string{"-log-level", "loud"}, []string{`-log-level "loud"`}},
		{"missing config", nil, []string{"-config", filepath.Join(dir, "none.yaml")}, []string{"none.yaml", "no such file"}},
		{"bad config", nil, []string{"-db", db, "-config", badYAML}, []string{badYAML + ":4:13:", `unknown time unit "fortnight"`}},
		{"keys without create", nil, []string{"keys"}, []string{"taskd keys: expected"}},
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
			// Each error is printed once: not by the flag package and
			// again by run.
			for _, w := range tt.want[:1] {
				if n := strings.Count(stderr, w); n != 1 {
					t.Errorf("stderr has %q %d times, want once:\n%s", w, n, stderr)
				}
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"serve", "-h"}, {"keys", "create", "-h"}, {"migrate", "-h"}} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code != 0 || !strings.Contains(stdout+stderr, "Usage") {
			t.Errorf("taskd %s: exit %d, output %q", strings.Join(args, " "), code, stdout+stderr)
		}
	}
	// taskd -h lists the subcommands, and the flags of serve, which it
	// would run.
	_, stdout, _ := runCLI(t, nil, "-h")
	for _, w := range []string{"taskd [serve]", "taskd keys create", "taskd migrate", "taskd version", "taskd help", "-tls-cert", "-addr", "Exit status"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("taskd -h does not mention %q:\n%s", w, stdout)
		}
	}
}

// taskd -version and taskd version print the version and the VCS revision
// of the build info, and exit 0.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"-version", "--version", "version"} {
		code, stdout, stderr := runCLI(t, nil, arg)
		if code != 0 || !strings.HasPrefix(stdout, "taskd ") || !strings.Contains(stdout, "revision") || strings.Count(stdout, "\n") != 1 || stderr != "" {
			t.Errorf("taskd %s: exit %d, stdout %q, stderr %q", arg, code, stdout, stderr)
		}
	}
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/allowancehq/allowance", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "949fcb6c0d1e"}, {Key: "vcs.time", Value: "2026-11-26T18:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	if got, want := versionText(bi, true), "taskd v1.2.3 revision 949fcb6c0d1e (2026-11-26T18:00:00Z) modified go1.26.0"; got != want {
		t.Errorf("versionText = %q, want %q", got, want)
	}
	bi = &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}}
	if got, want := versionText(bi, true), "taskd (devel) revision unknown go1.26.0"; got != want {
		t.Errorf("versionText without VCS = %q, want %q", got, want)
	}
	if got := versionText(nil, false); !strings.HasPrefix(got, "taskd ") {
		t.Errorf("versionText without build info = %q", got)
	}
}

// writeFile writes a file of content in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every misconfiguration found to pass silently (issue 14) stops taskd at
// start with exit status 2, a message that says what is wrong and what to
// write instead, and no file created: a rule pattern with a host part (a
// missing leading slash), a pattern that no rate-limited route can match, a
// -db that is no database address (which made SQLite files named after
// it), an out-of-range port, and half a TLS configuration.
func TestFootgunsRefused(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	rule := func(match string) string {
		return "rules:\n  - name: create-task\n    match: " + match + "\n    limits: 5/minute\n"
	}
	noSlash := writeFile(t, dir, "noslash.yaml", rule("POST v1/tasks"))
	host := writeFile(t, dir, "host.yaml", rule("POST api.example.com/v1/tasks"))
	typo := writeFile(t, dir, "typo.yaml", rule("POST /v1/task"))
	lower := writeFile(t, dir, "lower.yaml", rule("post /v1/tasks"))
	health := writeFile(t, dir, "health.yaml", rule("GET /healthz"))
	cert := writeFile(t, dir, "cert.pem", "not a certificate")
	db := "sqlite:" + filepath.Join(dir, "sub", "t.db") // never created: every case fails first
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"match without its leading slash", []string{"-db", db, "-config", noSlash}, []string{noSlash + ":3:12: rules[0].match:", `rule "create-task"`, `host part "v1"`, `write "POST /v1/tasks"`}},
		{"match with a host", []string{"-db", db, "-config", host}, []string{host + ":3:12:", `host part "api.example.com"`, `write "POST /v1/tasks"`}},
		{"match with a typo", []string{"-db", db, "-config", typo}, []string{typo + ":3:12:", `rule "create-task"`, "matches none of the rate-limited routes", "POST /v1/tasks"}},
		{"match with a lower-case method", []string{"-db", db, "-config", lower}, []string{lower + ":3:12:", `write "POST /v1/tasks"`}},
		{"match of a route not limited", []string{"-db", db, "-config", health}, []string{health + ":3:12:", "matches none"}},
		{"db a bare word", []string{"-db", "postgres"}, []string{`-db "postgres" is not a database address`, "sqlite:PATH", "file:PATH", "postgres://", "postgresql://"}},
		{"db a bare path", []string{"-db", "taskd.db"}, []string{`-db "taskd.db"`, "sqlite:taskd.db"}},
		{"db postgres without //", []string{"-db", "postgres:host/db"}, []string{`-db "postgres:host/db"`, "postgres://"}},
		{"db sqlite without a path", []string{"-db", "sqlite:"}, []string{"the path is empty"}},
		{"db sqlite as a URL", []string{"-db", "sqlite://taskd.db"}, []string{"not a URL with //"}},
		{"db env a bare word", []string{"keys", "create", "-user", "a", "-db", "postgres"}, []string{`-db "postgres"`}},
		{"migrate db a bare word", []string{"migrate", "-db", "mysql"}, []string{`-db "mysql"`}},
		{"port out of range", []string{"-addr", ":99999"}, []string{`-addr ":99999"`, "port from 0 to 65535"}},
		{"metrics port out of range", []string{"-metrics-addr", "127.0.0.1:70000"}, []string{`-metrics-addr "127.0.0.1:70000"`}},
		{"tls cert without key", []string{"-tls-cert", cert}, []string{"-tls-cert is set but -tls-key is not"}},
		{"tls key without cert", []string{"-tls-key", cert}, []string{"-tls-key is set but -tls-cert is not"}},
		{"tls files missing", []string{"-db", db, "-tls-cert", filepath.Join(dir, "none.pem"), "-tls-key", filepath.Join(dir, "none.key")}, []string{"none.pem", "no such file"}},
		{"tls files not PEM", []string{"-db", db, "-tls-cert", cert, "-tls-key", cert}, []string{"cert.pem", "failed to find any PEM data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, tt.args...)
			if code != 2 || stdout != "" {
				t.Fatalf("exit %d, stdout %q, want 2 and nothing; stderr:\n%s", code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yaml") && !strings.HasSuffix(e.Name(), ".pem") {
			t.Errorf("a refused command line created %s", e.Name())
		}
	}
}

// The documented exit statuses: 0 for a stop, help and version, 2 for a
// bad command line (above), 1 for a failure while running: the task
// database cannot be reached, or the address is in use. A -db of file:PATH
// is a SQLite file.
func TestExitStatuses(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCLI(t, nil, "migrate", "-db", "file:"+filepath.Join(dir, "f.db")); code != 0 {
		t.Fatalf("migrate -db file:PATH: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "f.db")); err != nil {
		t.Fatalf("-db file:PATH made no SQLite file: %v", err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// A port nobody listens on: connections are refused at once.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	db := "sqlite:" + filepath.Join(dir, "t.db")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"address in use", []string{"-addr", busy.Addr().String(), "-db", db, "-workers", "0"}, "listen on " + busy.Addr().String()},
		{"database unreachable", []string{"migrate", "-db", "postgres://taskd@" + closedAddr + "/taskd?sslmode=disable&connect_timeout=5"}, "task database"},
	} {
		code, _, stderr := runCLI(t, nil, tt.args...)
		if code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: exit %d, want 1 with %q; stderr:\n%s", tt.name, code, tt.want, stderr)
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

// listenWatcher is the stderr of an in-process taskd that logs JSON: it
// sends the addresses of "metrics listening" and "taskd listening" as they
// are logged.
type listenWatcher struct {
	mu      sync.Mutex
	partial []byte
	all     bytes.Buffer
	metrics chan string
	api     chan string
}

func (w *listenWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(w.partial[:i], &rec) == nil {
			switch rec.Msg {
			case "metrics listening":
				w.metrics <- rec.Addr
			case "taskd listening":
				w.api <- rec.Addr
			}
		}
		w.partial = w.partial[i+1:]
	}
}

func (w *listenWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

// get sends GET url with the API key key (none when empty) and returns the
// response and its body.
func get(t *testing.T, url, key string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// taskd serve with -metrics-addr serves /metrics on that address (a real
// listener on 127.0.0.1:0) and not on -addr; and with the default
// configuration it limits failed authentications per client IP: the 11th
// unknown key within a minute gets 429 with Retry-After, while a valid key
// still gets in.
func TestServeMetricsAddrAndAuthFailures(t *testing.T) {
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "t.db")
	code, key, stderr := runCLI(t, nil, "keys", "create", "-user", "alice", "-db", db)
	if code != 0 {
		t.Fatalf("keys create: exit %d: %s", code, stderr)
	}
	key = strings.TrimSpace(key)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	w := &listenWatcher{metrics: make(chan string, 1), api: make(chan string, 1)}
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"serve", "-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0", "-db", db, "-workers", "0", "-log-format", "json"}, io.Discard, w)
	}()
	var metricsAddr, apiAddr string
	for metricsAddr == "" || apiAddr == "" {
		select {
		case metricsAddr = <-w.metrics:
		case apiAddr = <-w.api:
		case c := <-exited:
			t.Fatalf("taskd exited with %d before listening:\n%s", c, w)
		}
	}
	if metricsAddr == apiAddr {
		t.Fatalf("metrics and API on the same address %s", apiAddr)
	}

	res, body := get(t, "http://"+metricsAddr+"/metrics", "")
	if res.StatusCode != http.StatusOK || !strings.Contains(body, "taskd_auth_requests_total") || !strings.Contains(body, "taskd_task_refund_records") {
		t.Fatalf("GET /metrics on -metrics-addr: %d\n%.500s", res.StatusCode, body)
	}
	if res, body := get(t, "http://"+apiAddr+"/metrics", ""); res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics on -addr: %d %s; want 404", res.StatusCode, body)
	}

	for i := range 10 {
		if res, body := get(t, "http://"+apiAddr+"/v1/tasks", "tk_"+strings.Repeat("A", 42)+strconv.Itoa(i%10)); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unknown key #%d: %d %s; want 401", i+1, res.StatusCode, body)
		}
	}
	res, body = get(t, "http://"+apiAddr+"/v1/tasks", "tk_"+strings.Repeat("B", 43))
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" || res.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, `"rule":"auth-failures"`) {
		t.Fatalf("11th unknown key in a minute: %d, Retry-After %q, %s; want 429 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"), body)
	}
	// Alice's key was never used: its first use is charged before the
	// lookup like any unknown key, so from this address it waits too.
	if res, _ := get(t, "http://"+apiAddr+"/v1/tasks", key); res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a valid key never seen, from the locked address: %d; want 429", res.StatusCode)
	}
	if _, body := get(t, "http://"+metricsAddr+"/metrics", ""); !strings.Contains(body, `taskd_auth_requests_total{result="limited"} 2`) || !strings.Contains(body, `taskd_auth_requests_total{result="unknown"} 10`) {
		t.Errorf("metrics after 10 unknown keys and 2 limited requests:\n%s", body)
	}

	stop()
	if c := <-exited; c != 0 {
		t.Fatalf("taskd exited with %d after a graceful stop:\n%s", c, w)
	}
}

// countStore counts the refund record counts asked of a task store.
type countStore struct {
	tasks.Store
	counts atomic.Int64
}

func (s *countStore) CountRefunds(context.Context) (tasks.RefundCounts, error) {
	n := s.counts.Add(1)
	return tasks.RefundCounts{Pending: int(n)}, nil
}

// The refund records are counted at most once per refundCountMaxAge
// however often /metrics is scraped, and again at the next scrape after
// this process changed a record.
func TestRefundStatesCached(t *testing.T) {
	store := &countStore{}
	c := newRefundStates(store, slog.New(slog.DiscardHandler))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	pending := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "pending" {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatal("no pending sample")
		return 0
	}
	for range 100 {
		if v := pending(); v != 1 {
			t.Fatalf("pending = %v, want 1 (the first count)", v)
		}
	}
	if n := store.counts.Load(); n != 1 {
		t.Fatalf("100 scrapes counted %d times, want 1", n)
	}
	now = now.Add(refundCountMaxAge - time.Nanosecond)
	if v := pending(); v != 1 || store.counts.Load() != 1 {
		t.Fatalf("just before the max age: pending %v after %d counts; want the first count", v, store.counts.Load())
	}
	now = now.Add(time.Nanosecond)
	if v := pending(); v != 2 || store.counts.Load() != 2 {
		t.Fatalf("at the max age: pending %v after %d counts; want a second count", v, store.counts.Load())
	}
	c.Invalidate()
	if v := pending(); v != 3 {
		t.Fatalf("after a local change: pending %v, want a third count", v)
	}
	pending()
	if n := store.counts.Load(); n != 3 {
		t.Fatalf("%d counts, want 3: a change is counted once", n)
	}
}
