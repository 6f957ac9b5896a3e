package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/internal/api"
)

func TestDefault(t *testing.T) {
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("Load(\"\") = %+v, want Default()", cfg)
	}
	if len(cfg.Rules) != 2 {
		t.Fatalf("default rules: %d, want 2", len(cfg.Rules))
	}
	ct, read := cfg.Rules[0], cfg.Rules[1]
	if ct.Name != "create-task" || ct.Match != "POST /v1/tasks" || ct.Limits.String() != "5/minute; 50/day" ||
		ct.Algorithm != allowance.SlidingWindow || !ct.RefundsOn(Conflict) || !ct.RefundsOn(ServerError) || ct.RefundsOn(WorkerFailure) {
		t.Errorf("create-task rule = %+v", ct)
	}
	if read.Name != "read" || read.Match != "GET /v1/" || read.Limits.String() != "600/minute" ||
		!slices.Equal(read.RefundOn, []RefundReason{ServerError}) {
		t.Errorf("read rule = %+v", read)
	}
	for _, r := range cfg.Rules {
		if err := r.Validate(); err != nil {
			t.Errorf("default rule %s: %v", r.Name, err)
		}
		if err := ValidPattern(r.Match); err != nil {
			t.Errorf("default rule %s: %v", r.Name, err)
		}
	}
}

// The configuration DESIGN §6 shows, with server_error refunds added to
// both rules, decodes to the defaults.
func TestParseDesignExample(t *testing.T) {
	const doc = `
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 5/minute; 50/day
    algorithm: sliding-window
    refund_on: [conflict, server_error]
  - name: read
    match: GET /v1/
    limits: 600/minute
    refund_on: [server_error]
`
	cfg, err := Parse("taskd.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("got %+v\nwant %+v", cfg, Default())
	}
}

func TestParseEveryField(t *testing.T) {
	const doc = `
server:
  max_body_bytes: 1024
  shutdown_timeout: 5s
  check_timeout: 250ms
  lease: 1m
  max_attempts: 5
  auth_failures: 20 per 30s
rules:
  - name: submit
    match: POST /v1/tasks
    limits: 3 per 30 seconds, 20/day
    algorithm: GCRA
    cost: 2
    refund_on: [conflict, worker_failure, stuck, server_error]
    refund_guard: 20/hour
    fail_open: true
    idempotency_key: false
`
	cfg, err := Parse("taskd.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Server: Server{MaxBodyBytes: 1024, ShutdownTimeout: 5 * time.Second, CheckTimeout: 250 * time.Millisecond, Lease: time.Minute, MaxAttempts: 5,
			AuthFailures: allowance.Limit{Count: 20, Period: 30 * time.Second}, Retention: DefaultRetention},
		Rules: []Rule{{
			Rule: allowance.Rule{
				Name:        "submit",
				Limits:      allowance.Limits{{Count: 3, Period: 30 * time.Second}, {Count: 20, Period: 24 * time.Hour}},
				Algorithm:   allowance.GCRA,
				Cost:        2,
				RefundGuard: allowance.Limit{Count: 20, Period: time.Hour},
			},
			Match:    "POST /v1/tasks",
			RefundOn: []RefundReason{Conflict, WorkerFailure, Stuck, ServerError},
			FailOpen: true,
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
}

// idempotency_key defaults to true for a rule that matches the task submit
// and false for others; an explicit value wins.
func TestIdempotencyKeyDefault(t *testing.T) {
	for _, c := range []struct {
		rule string
		want bool
	}{
		{"match: POST /v1/tasks", true},
		{"match: /v1/", true},
		{"match: GET /v1/", false},
		{"match: POST /v1/tasks/{id}/cancel", false},
		{"match: POST /v1/tasks\n    idempotency_key: false", false},
		{"match: GET /v1/\n    idempotency_key: true", true},
	} {
		doc := "rules:\n  - name: r\n    limits: 1/s\n    " + c.rule + "\n"
		cfg, err := Parse("taskd.yaml", []byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", c.rule, err)
		}
		if got := cfg.Rules[0].IdempotencyKey; got != c.want {
			t.Errorf("%q: IdempotencyKey = %v, want %v", c.rule, got, c.want)
		}
	}
	if !Default().Rules[0].IdempotencyKey || Default().Rules[1].IdempotencyKey {
		t.Errorf("Default rules' IdempotencyKey = %v, %v; want true for create-task only", Default().Rules[0].IdempotencyKey, Default().Rules[1].IdempotencyKey)
	}
}

// A rule with server_error gives its charge back on every 5xx status, and
// only then; the default rules both do.
func TestRefundStatuses(t *testing.T) {
	for _, r := range Default().Rules {
		got := r.RefundStatuses()
		if len(got) != 100 || got[0] != 500 || got[99] != 599 {
			t.Errorf("default rule %s: RefundStatuses() = %v, want 500 to 599", r.Name, got)
		}
		if slices.Contains(got, 409) || slices.Contains(got, 400) {
			t.Errorf("default rule %s refunds a client error status: %v", r.Name, got)
		}
	}
	r := Rule{RefundOn: []RefundReason{Conflict, WorkerFailure, Stuck}}
	if got := r.RefundStatuses(); got != nil {
		t.Errorf("without server_error: RefundStatuses() = %v, want none", got)
	}
}

func TestParseServerOnlyKeepsDefaultRules(t *testing.T) {
	cfg, err := Parse("taskd.yaml", []byte("server:\n  lease: 10s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Rules, Default().Rules) {
		t.Errorf("rules = %+v, want the defaults", cfg.Rules)
	}
	if cfg.Server.Lease != 10*time.Second || cfg.Server.MaxBodyBytes != DefaultMaxBodyBytes {
		t.Errorf("server = %+v", cfg.Server)
	}
}

const okRule = "rules:\n  - name: a\n    match: GET /\n    limits: 5/minute\n"

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name      string
		doc       string
		line, col int
		field     string
		want      []string // substrings of the message
	}{
		{"empty file", "  \n", 0, 0, "", []string{"file is empty", "expected a mapping"}},
		{"bad yaml", "rules: [\n", 1, 8, "", []string{"']' not found"}},
		{"bad indentation", "rules:\n  - name: a\n  match: x\n", 3, 3, "", []string{"not allowed"}},
		{"not a mapping", "- a\n- b\n", 1, 1, "", []string{"sequence", "expected a mapping"}},
		{"several documents", "a: 1\n---\nb: 2\n", 0, 0, "", []string{"several YAML documents"}},
		{"unknown top-level field", "rulez: []\n", 1, 1, "", []string{`unknown field "rulez"`, "expected the keys"}},
		{"unknown rule field", okRule + "    bogus: 1\n", 5, 5, "", []string{`unknown field "bogus"`, "limits"}},
		{"unknown server field", "server:\n  port: 80\n", 2, 3, "", []string{`unknown field "port"`, "lease"}},
		{"duplicate key", "rules:\n  - name: a\n    name: b\n", 3, 5, "", []string{`"name" already defined`}},
		{"rules not a list", "rules: 5\n", 1, 8, "", []string{"a number was used where a list is expected"}},
		{"empty rules", "rules: []\n", 1, 8, "rules", []string{"no rules", "expected at least one"}},
		{"cost not a number", okRule + "    cost: abc\n", 5, 11, "", []string{"string", "expected a number"}},
		{"fail_open not a bool", okRule + "    fail_open: maybe\n", 5, 16, "", []string{"expected a boolean"}},
		{"missing name", "rules:\n  - match: GET /\n    limits: 5/minute\n", 2, 10, "rules[0].name", []string{"name is missing"}},
		{"bad name", "rules:\n  - name: a b\n    match: GET /\n    limits: 5/minute\n", 2, 11, "rules[0].name", []string{`rule name "a b"`, "expected letters"}},
		{"duplicate name", okRule + "  - name: a\n    match: GET /x\n    limits: 1/s\n", 5, 11, "rules[1].name", []string{`rule "a" is given twice`}},
		{"missing match", "rules:\n  - name: a\n    limits: 5/minute\n", 2, 9, "rules[0].match", []string{"match is missing", "POST /v1/tasks"}},
		{"match without slash", "rules:\n  - name: a\n    match: GET v1\n    limits: 5/minute\n", 3, 12, "rules[0].match", []string{`"GET v1"`, "missing /", "expected [METHOD ][HOST]/[PATH]"}},
		{"match bad wildcard", "rules:\n  - name: a\n    match: GET /{x\n    limits: 5/minute\n", 3, 12, "rules[0].match", []string{"bad wildcard"}},
		{"match trailing space", "rules:\n  - name: a\n    match: 'GET / '\n    limits: 5/minute\n", 3, 12, "rules[0].match", []string{"trailing spaces"}},
		{"missing limits", "rules:\n  - name: a\n    match: GET /\n", 2, 9, "rules[0].limits", []string{"limits are missing", "5/minute; 50/day"}},
		{"bad limit unit", "rules:\n  - name: a\n    match: GET /\n    limits: 5/minit\n", 4, 13, "rules[0].limits", []string{`"5/minit"`, `unknown time unit "minit"`, "expected second, minute"}},
		{"zero limit", "rules:\n  - name: a\n    match: GET /\n    limits: 0/minute\n", 4, 13, "rules[0].limits", []string{"must be at least 1"}},
		{"limit without unit", "rules:\n  - name: a\n    match: GET /\n    limits: \"5\"\n", 4, 13, "rules[0].limits", []string{`limit "5"`, "expected"}},
		{"unknown algorithm", okRule + "    algorithm: leaky-bucket\n", 5, 16, "rules[0].algorithm", []string{`unknown algorithm "leaky-bucket"`, "sliding-window"}},
		{"unknown refund reason", okRule + "    refund_on: [conflict, timeout]\n", 5, 27, "rules[0].refund_on[1]", []string{`unknown refund reason "timeout"`, "conflict, worker_failure, stuck or server_error"}},
		{"repeated refund reason", okRule + "    refund_on: [stuck, stuck]\n", 5, 24, "rules[0].refund_on[1]", []string{`"stuck" is given twice`}},
		{"refund_on not a list", okRule + "    refund_on: conflict\n", 5, 16, "", []string{"a string was used where a list is expected"}},
		{"bad refund guard", okRule + "    refund_guard: lots\n", 5, 19, "rules[0].refund_guard", []string{`limit "lots"`}},
		{"cost above limit", okRule + "    cost: 6\n", 5, 11, "rules[0].cost", []string{"cost 6 exceeds limit"}},
		{"repeated limit", "rules:\n  - name: cost-limit\n    match: GET /\n    limits: 5/minute; 5/minute\n", 4, 13, "rules[0].limits", []string{"the same limit is given twice"}},
		{"negative cost", okRule + "    cost: -1\n", 5, 11, "rules[0].cost", []string{"must not be negative"}},
		{"bad duration", "server:\n  lease: forever\n", 2, 10, "server.lease", []string{`"forever" is not a positive duration`, "30s"}},
		{"duration without unit", "server:\n  shutdown_timeout: 5\n", 2, 21, "server.shutdown_timeout", []string{"expected a number with a unit"}},
		{"zero attempts", "server:\n  max_attempts: 0\n", 2, 17, "server.max_attempts", []string{"expected a whole number from 1 to 100"}},
		{"zero body limit", "server:\n  max_body_bytes: 0\n", 2, 19, "server.max_body_bytes", []string{"must be at least 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("conf/taskd.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v; want an error", cfg)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is a %T, want *Error", err, err)
			}
			msg := err.Error()
			if ce.File != "conf/taskd.yaml" || !strings.HasPrefix(msg, "conf/taskd.yaml") {
				t.Errorf("error %q does not name the file", msg)
			}
			if ce.Line != tt.line || ce.Column != tt.col {
				t.Errorf("error %q at %d:%d, want %d:%d", msg, ce.Line, ce.Column, tt.line, tt.col)
			}
			if ce.Field != tt.field {
				t.Errorf("error %q has field %q, want %q", msg, ce.Field, tt.field)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(okRule), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Rules) != 1 || cfg.Rules[0].Name != "a" || cfg.Server != Default().Server {
		t.Errorf("Load(good) = %+v", cfg)
	}

	missing := filepath.Join(dir, "missing.yaml")
	if _, err := Load(missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load(missing) error = %v; want one naming the file and wrapping os.ErrNotExist", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(okRule+"    algorithm: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+":5:16:") {
		t.Errorf("Load(bad) error = %v; want it to start with %s:5:16:", err, bad)
	}
}

func TestValidPattern(t *testing.T) {
	for _, p := range []string{"/", "GET /v1/", "POST /v1/tasks", "GET /v1/tasks/{id}", "example.com/", "DELETE /x/{rest...}"} {
		if err := ValidPattern(p); err != nil {
			t.Errorf("ValidPattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "GET", "GET v1", "GET  v1", "GET /{", "/a/{x}/{x}", " GET /"} {
		if err := ValidPattern(p); err == nil {
			t.Errorf("ValidPattern(%q) = nil, want an error", p)
		}
	}
}

// FuzzParse: any input either parses into rules that validate, or fails with
// an *Error naming the file; never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(okRule))
	f.Add([]byte("server:\n  lease: 1s\n"))
	f.Add([]byte("rules:\n  - name: a\n    match: GET /{x}\n    limits: 1/s; 2 per 3 minutes\n    algorithm: gcra\n    refund_on: [stuck]\n"))
	f.Add([]byte("rules: [\n"))
	f.Add([]byte("{a: [b, {c: d}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "f.yaml" {
				t.Fatalf("error %v (%T) is not an *Error naming the file", err, err)
			}
			return
		}
		if len(cfg.Rules) == 0 {
			t.Fatal("no rules and no error")
		}
		for _, r := range cfg.Rules {
			if err := r.Validate(); err != nil {
				t.Fatalf("rule %+v does not validate: %v", r, err)
			}
			if err := ValidPattern(r.Match); err != nil {
				t.Fatalf("rule %+v: %v", r, err)
			}
		}
	})
}

// taskdRoutes are the rate-limited routes of taskd, as cmd/taskd passes
// them to WithRoutes.
func taskdRoutes() []Route {
	var out []Route
	for _, r := range api.Routes() {
		if r.Auth {
			out = append(out, Route{Method: r.Method, Path: r.Path})
		}
	}
	return out
}

// Every way found to write a rule that parses but silently limits nothing
// is refused at load, naming the rule and the file's line and column, and
// showing the pattern to write instead.
func TestParseFootguns(t *testing.T) {
	rule := func(match string) string {
		return "rules:\n  - name: create-task\n    match: " + match + "\n    limits: 5/minute\n"
	}
	tests := []struct {
		name  string
		match string
		want  []string
	}{
		{"missing leading slash", "POST v1/tasks", []string{`rule "create-task"`, `host part "v1"`, `write "POST /v1/tasks"`}},
		{"missing slash, prefix", "GET v1/", []string{`host part "v1"`, `write "GET /v1/"`}},
		{"missing slash, no method", "v1/tasks", []string{`host part "v1"`, `write "/v1/tasks"`}},
		{"a host name", "POST api.example.com/v1/tasks", []string{`host part "api.example.com"`, `write "POST /v1/tasks"`}},
		{"a host and port", "GET localhost:8080/v1/", []string{`host part "localhost:8080"`, `write "GET /v1/"`}},
		{"a host alone", "example.com/", []string{`host part "example.com"`, `write "/"`}},
		{"a typo in the path", "POST /v1/task", []string{`rule "create-task"`, `"POST /v1/task" matches none of the rate-limited routes`, "POST /v1/tasks, GET /v1/tasks"}},
		{"lower-case method", "post /v1/tasks", []string{`methods are case-sensitive: write "POST /v1/tasks"`}},
		{"wrong method", "GET /v1/tasks/{id}/cancel", []string{"matches none"}},
		{"unversioned path", "POST /tasks", []string{"matches none"}},
		{"not rate limited", "GET /healthz", []string{"matches none"}},
		{"metrics", "/metrics", []string{"matches none"}},
		{"prefix with no route", "GET /v2/", []string{"matches none"}},
		{"exact end where there is no route", "GET /v1/{$}", []string{"matches none"}},
		{"missing trailing segment", "POST /v1/tasks/{id}", []string{"matches none"}},
		{"a method no route has", "DELETE /v1/tasks/{id}", []string{"matches none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("taskd.yaml", []byte(rule(tt.match)), WithRoutes(taskdRoutes()...))
			if err == nil {
				t.Fatalf("Parse(match: %s) = %+v; want an error", tt.match, cfg)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Line != 3 || ce.Column != 12 || ce.Field != "rules[0].match" {
				t.Fatalf("error %q (%+v): want an *Error at 3:12 on rules[0].match", err, ce)
			}
			if !strings.HasPrefix(err.Error(), "taskd.yaml:3:12: rules[0].match: ") {
				t.Errorf("error %q does not start with the file, line, column and field", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// The fix offered parses.
			if _, fix, ok := strings.Cut(err.Error(), ": write "); ok && strings.Contains(err.Error(), "host part") {
				fix = strings.Trim(fix, `"`)
				if _, err := Parse("taskd.yaml", []byte(rule(fix)), WithRoutes(taskdRoutes()...)); err != nil {
					t.Errorf("the fix %q is refused too: %v", fix, err)
				}
			}
		})
	}
	// A host is refused also when the routes are not known.
	if _, err := Parse("taskd.yaml", []byte(rule("POST v1/tasks"))); err == nil || !strings.Contains(err.Error(), `write "POST /v1/tasks"`) {
		t.Errorf("without routes: %v; want the host refused", err)
	}
}

// Patterns that match a rate-limited route are accepted: exact ones,
// prefixes, wildcards, method-less ones and HEAD for a GET route.
func TestParseRoutePatterns(t *testing.T) {
	for _, match := range []string{
		"POST /v1/tasks", "GET /v1/", "/v1/", "/", "GET /", "/v1/tasks", "GET /v1/tasks/{id}", "GET /v1/tasks/t_abc",
		"POST /v1/tasks/{id}/cancel", "/v1/tasks/{id}/{action}", "POST /v1/tasks/{rest...}", "GET /v1/ratelimit",
		"HEAD /v1/ratelimit", "GET /v1/{what}", "POST /v1/{coll}/{id}/cancel",
	} {
		doc := "rules:\n  - name: r\n    match: " + match + "\n    limits: 5/minute\n"
		if _, err := Parse("taskd.yaml", []byte(doc), WithRoutes(taskdRoutes()...)); err != nil {
			t.Errorf("match %q: %v", match, err)
		}
	}
	// The defaults match.
	for _, r := range Default().Rules {
		if err := checkRoutes(r.Match, taskdRoutes()); err != nil {
			t.Errorf("default rule %s: %v", r.Name, err)
		}
	}
}
