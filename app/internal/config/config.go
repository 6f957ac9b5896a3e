// Package config loads taskd's YAML configuration: the rate-limit rules and a
// few server settings. Decoding is strict: an unknown field, a value of the
// wrong type, a limit string that does not parse, an unknown algorithm or
// refund reason and a malformed route pattern are all errors that name the
// file, the line and column, and what was expected. So are two patterns
// that parse but would silently never charge anything: one with a host
// part, which net/http reads "POST v1/tasks" as (host v1, path /tasks), and,
// given the service's routes (WithRoutes), one that matches none of them.
//
// A configuration file looks like this; every field but the rules' name,
// match and limits is optional:
//
//	server:
//	  max_body_bytes: 65536
//	  shutdown_timeout: 30s
//	  check_timeout: 1s
//	  lease: 30s
//	  max_attempts: 3
//	  auth_failures: 10/minute
//	  retention: 30d        # finished tasks are deleted after this; off keeps them
//	rules:
//	  - name: create-task
//	    match: POST /v1/tasks
//	    limits: 5/minute; 50/day
//	    algorithm: sliding-window
//	    refund_on: [conflict, server_error]
//	    refund_guard: 20/hour
//	  - name: read
//	    match: GET /v1/
//	    limits: 600/minute
//	    refund_on: [server_error]
//
// When the file has no rules key, the default rules (Default) apply.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/allowancehq/allowance"
)

// RefundReason names a situation in which a rule's charge is given back.
type RefundReason string

// The refund reasons a rule's refund_on may list.
const (
	// Conflict: POST /v1/tasks answered 409 because the user already has an
	// active task.
	Conflict RefundReason = "conflict"
	// WorkerFailure: the task's worker failed it.
	WorkerFailure RefundReason = "worker_failure"
	// Stuck: the task's lease ran out and the reaper ended it.
	Stuck RefundReason = "stuck"
	// ServerError: the server failed to produce the response: the handler
	// answered with a 5xx status (500 after a panic, 503 when the task
	// database failed or timed out).
	ServerError RefundReason = "server_error"
)

// RefundReasons lists every refund reason, in the order of their constants.
func RefundReasons() []RefundReason {
	return []RefundReason{Conflict, WorkerFailure, Stuck, ServerError}
}

// refundReasonList is RefundReasons as a message lists them.
const refundReasonList = "conflict, worker_failure, stuck or server_error"

// Rule is one rate-limit rule of the configuration.
type Rule struct {
	// Rule holds the name, limits, algorithm, cost and refund guard.
	allowance.Rule
	// Match is the net/http ServeMux pattern of the requests the rule
	// applies to, such as "POST /v1/tasks" or "GET /v1/".
	Match string
	// RefundOn lists the situations in which a charge of this rule is given
	// back. Empty: never.
	RefundOn []RefundReason
	// FailOpen says what happens when the limits store fails: serve the
	// request (true) or answer 503 (false, the default).
	FailOpen bool
	// IdempotencyKey makes the rule honour the request's Idempotency-Key
	// header (httplimit.Rule.IdempotencyKey): a retry with the key the
	// first request carried, while that request's charge counts, is not
	// charged again. YAML idempotency_key; when unset it is true for a
	// rule whose pattern matches the task submit, POST /v1/tasks, and
	// false for the others.
	IdempotencyKey bool
}

// RefundsOn reports whether the rule gives its charge back for reason.
func (r Rule) RefundsOn(reason RefundReason) bool { return slices.Contains(r.RefundOn, reason) }

// RefundStatuses returns the response statuses after which the rate-limit
// middleware gives a charge of the rule back by itself (httplimit.Rule's
// RefundOn): every server error status, 500 to 599, when the rule lists
// ServerError, else none. Each call returns a new slice.
//
// A handler writes a 5xx status only when it failed to serve the request,
// so the refund is made as the status is written, before the headers go
// out, and the response's rate-limit headers show the budget it restored.
func (r Rule) RefundStatuses() []int {
	if !r.RefundsOn(ServerError) {
		return nil
	}
	statuses := make([]int, 0, 100)
	for s := 500; s <= 599; s++ {
		statuses = append(statuses, s)
	}
	return statuses
}

// Server holds server settings. Zero fields take the defaults of Default.
type Server struct {
	// MaxBodyBytes bounds a request body; larger bodies get 413.
	MaxBodyBytes int64
	// ShutdownTimeout bounds a graceful shutdown: in-flight requests and
	// running tasks get this long to finish.
	ShutdownTimeout time.Duration
	// CheckTimeout bounds one rate-limit check against the limits store.
	CheckTimeout time.Duration
	// Lease is how long a worker holds a task between heartbeats.
	Lease time.Duration
	// MaxAttempts is how many times a task may be started: a task whose
	// lease ran out (its worker died) that often is marked stuck instead of
	// being queued again.
	MaxAttempts int
	// AuthFailures limits the failed authentications (a missing, malformed
	// or unknown API key) per client IP address: past it the client gets 429
	// before its key is looked up. The zero Limit turns the limit off, which
	// a file does with "auth_failures: off"; without the key a file gets
	// DefaultAuthFailures.
	AuthFailures allowance.Limit
	// Retention is how long finished tasks (succeeded, failed, canceled,
	// stuck) are kept after they finish; older ones are deleted. Zero keeps
	// them forever, which a file says with "retention: off" (or 0);
	// without the key a file gets DefaultRetention.
	Retention time.Duration
}

// Config is taskd's configuration.
type Config struct {
	Server Server
	Rules  []Rule
}

// Defaults of the server settings.
const (
	DefaultMaxBodyBytes    = 64 << 10
	DefaultShutdownTimeout = 30 * time.Second
	DefaultCheckTimeout    = time.Second
	DefaultLease           = 30 * time.Second
	DefaultMaxAttempts     = 3
	// DefaultAuthFailures is auth_failures when not given: 10 failed
	// authentications a minute per client IP address.
	DefaultAuthFailures = "10/minute"
	// DefaultRetention is retention when not given: 30 days.
	DefaultRetention = 30 * 24 * time.Hour
	// MinRetention is the shortest retention allowed (other than off):
	// shorter would delete results before clients have read them.
	MinRetention = time.Hour
)

// Default returns the built-in configuration, used when no file is given:
//
//	rules:
//	  - name: create-task
//	    match: POST /v1/tasks
//	    limits: 5/minute; 50/day
//	    algorithm: sliding-window
//	    refund_on: [conflict, server_error]
//	  - name: read
//	    match: GET /v1/
//	    limits: 600/minute
//	    refund_on: [server_error]
//
// and the Default* server settings.
func Default() Config {
	return Config{
		Server: defaultServer(),
		Rules: []Rule{
			{
				Rule: allowance.Rule{
					Name:      "create-task",
					Limits:    allowance.Limits{{Count: 5, Period: time.Minute}, {Count: 50, Period: 24 * time.Hour}},
					Algorithm: allowance.SlidingWindow,
				},
				Match:          "POST /v1/tasks",
				RefundOn:       []RefundReason{Conflict, ServerError},
				IdempotencyKey: true,
			},
			{
				Rule: allowance.Rule{
					Name:      "read",
					Limits:    allowance.Limits{{Count: 600, Period: time.Minute}},
					Algorithm: allowance.FixedWindow,
				},
				Match:    "GET /v1/",
				RefundOn: []RefundReason{ServerError},
			},
		},
	}
}

func defaultServer() Server {
	return Server{
		MaxBodyBytes:    DefaultMaxBodyBytes,
		ShutdownTimeout: DefaultShutdownTimeout,
		CheckTimeout:    DefaultCheckTimeout,
		Lease:           DefaultLease,
		MaxAttempts:     DefaultMaxAttempts,
		AuthFailures:    allowance.Limit{Count: 10, Period: time.Minute}, // DefaultAuthFailures
		Retention:       DefaultRetention,
	}
}

// Error is a problem with a configuration file, at a line and column when
// one is known (Line 0 otherwise).
type Error struct {
	File   string
	Line   int
	Column int
	// Field is the YAML path of the value at fault, such as
	// "rules[0].limits"; empty for syntax errors.
	Field string
	// Msg says what is wrong and what was expected.
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and parses the configuration file at path. An empty path
// returns Default.
func Load(path string, opts ...Option) (Config, error) {
	if path == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, opts...)
}

// maxFileSize bounds a configuration file; real ones are a few hundred bytes.
const maxFileSize = 1 << 20

// Parse parses configuration data; name (usually the file's path) is used in
// errors. The error is an *Error.
func Parse(name string, data []byte, opts ...Option) (Config, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if len(data) > maxFileSize {
		return Config{}, &Error{File: name, Msg: fmt.Sprintf("file is %d bytes; at most %d are allowed", len(data), maxFileSize)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return Config{}, &Error{File: name, Msg: "file is empty; expected a mapping with a rules list"}
	}
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return Config{}, yamlError(name, err)
	}
	if len(file.Docs) == 0 || file.Docs[0].Body == nil {
		return Config{}, &Error{File: name, Msg: "file holds no YAML document; expected a mapping with a rules list"}
	}
	if len(file.Docs) > 1 {
		return Config{}, &Error{File: name, Msg: "file holds several YAML documents; expected one"}
	}
	if body := file.Docs[0].Body; body.Type() != ast.MappingType {
		tk := body.GetToken()
		return Config{}, &Error{File: name, Line: tk.Position.Line, Column: tk.Position.Column,
			Msg: fmt.Sprintf("the document is a %s; expected a mapping with a rules list", body.Type().YAMLName())}
	}
	var raw rawConfig
	if err := yaml.UnmarshalWithOptions(data, &raw, yaml.Strict(), yaml.DisallowUnknownField()); err != nil {
		return Config{}, yamlError(name, err)
	}
	d := decoder{name: name, file: file, routes: o.routes}
	return d.config(raw)
}

// rawConfig is the file as written; decoder turns it into a Config.
type rawConfig struct {
	Server *rawServer `yaml:"server"`
	Rules  *[]rawRule `yaml:"rules"`
}

type rawServer struct {
	MaxBodyBytes    *int64 `yaml:"max_body_bytes"`
	ShutdownTimeout string `yaml:"shutdown_timeout"`
	CheckTimeout    string `yaml:"check_timeout"`
	Lease           string `yaml:"lease"`
	MaxAttempts     *int   `yaml:"max_attempts"`
	// AuthFailures is a pointer so that an explicit "" is an error rather
	// than the default.
	AuthFailures *string `yaml:"auth_failures"`
	// Retention is a pointer so that an explicit "" is an error.
	Retention *string `yaml:"retention"`
}

type rawRule struct {
	Name        string   `yaml:"name"`
	Match       string   `yaml:"match"`
	Limits      string   `yaml:"limits"`
	Algorithm   string   `yaml:"algorithm"`
	Cost        int64    `yaml:"cost"`
	RefundOn    []string `yaml:"refund_on"`
	RefundGuard string   `yaml:"refund_guard"`
	FailOpen    bool     `yaml:"fail_open"`
	// IdempotencyKey is a pointer so that unset takes the default.
	IdempotencyKey *bool `yaml:"idempotency_key"`
}

type decoder struct {
	name   string
	file   *ast.File
	routes []Route // see WithRoutes
}

// errorAt returns an *Error for the value at the YAML path field (such as
// "rules[0].limits"), positioned at that value, or at the closest enclosing
// value present in the file.
func (d decoder) errorAt(field string, format string, args ...any) error {
	e := &Error{File: d.name, Field: field, Msg: fmt.Sprintf(format, args...)}
	for p := field; ; {
		if line, col, ok := d.position(p); ok {
			e.Line, e.Column = line, col
			break
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return e
}

// position returns the line and column of the value at the YAML path field.
func (d decoder) position(field string) (line, col int, ok bool) {
	path, err := yaml.PathString("$." + field)
	if err != nil {
		return 0, 0, false
	}
	node, err := path.FilterFile(d.file)
	if err != nil || node == nil || node.GetToken() == nil || node.GetToken().Position == nil {
		return 0, 0, false
	}
	pos := node.GetToken().Position
	return pos.Line, pos.Column, true
}

func (d decoder) config(raw rawConfig) (Config, error) {
	cfg := Config{Server: defaultServer()}
	if s := raw.Server; s != nil {
		if s.MaxBodyBytes != nil {
			if *s.MaxBodyBytes < 1 {
				return Config{}, d.errorAt("server.max_body_bytes", "%d must be at least 1", *s.MaxBodyBytes)
			}
			cfg.Server.MaxBodyBytes = *s.MaxBodyBytes
		}
		if s.MaxAttempts != nil {
			if *s.MaxAttempts < 1 || *s.MaxAttempts > 100 {
				return Config{}, d.errorAt("server.max_attempts", "%d: expected a whole number from 1 to 100", *s.MaxAttempts)
			}
			cfg.Server.MaxAttempts = *s.MaxAttempts
		}
		if s.AuthFailures != nil {
			l, err := parseAuthFailures(*s.AuthFailures)
			if err != nil {
				return Config{}, d.errorAt("server.auth_failures", "%v", err)
			}
			cfg.Server.AuthFailures = l
		}
		if s.Retention != nil {
			v, err := parseRetention(*s.Retention)
			if err != nil {
				return Config{}, d.errorAt("server.retention", "%v", err)
			}
			cfg.Server.Retention = v
		}
		for _, f := range []struct {
			field string
			text  string
			dst   *time.Duration
		}{
			{"shutdown_timeout", s.ShutdownTimeout, &cfg.Server.ShutdownTimeout},
			{"check_timeout", s.CheckTimeout, &cfg.Server.CheckTimeout},
			{"lease", s.Lease, &cfg.Server.Lease},
		} {
			if f.text == "" {
				continue
			}
			v, err := time.ParseDuration(f.text)
			if err != nil || v <= 0 {
				return Config{}, d.errorAt("server."+f.field, "%q is not a positive duration; expected a number with a unit, such as 30s or 2m", f.text)
			}
			*f.dst = v
		}
	}
	if raw.Rules == nil {
		cfg.Rules = Default().Rules
		return cfg, nil
	}
	if len(*raw.Rules) == 0 {
		return Config{}, d.errorAt("rules", "no rules; expected at least one (leave rules out for the defaults)")
	}
	if len(*raw.Rules) > allowance.MaxRules {
		return Config{}, d.errorAt("rules", "%d rules; at most %d are allowed", len(*raw.Rules), allowance.MaxRules)
	}
	for i, rr := range *raw.Rules {
		r, err := d.rule(fmt.Sprintf("rules[%d]", i), rr)
		if err != nil {
			return Config{}, err
		}
		for j, prev := range cfg.Rules {
			if prev.Name == r.Name {
				return Config{}, d.errorAt(fmt.Sprintf("rules[%d].name", i), "rule %q is given twice (also rules[%d]); expected unique names", r.Name, j)
			}
		}
		cfg.Rules = append(cfg.Rules, r)
	}
	return cfg, nil
}

func (d decoder) rule(at string, rr rawRule) (Rule, error) {
	var r Rule
	if rr.Name == "" {
		return r, d.errorAt(at+".name", "name is missing; expected 1 to 64 letters, digits, '-', '_' or '.'")
	}
	r.Name = rr.Name
	if rr.Match == "" {
		return r, d.errorAt(at+".match", `match is missing; expected a route pattern such as "POST /v1/tasks" or "GET /v1/"`)
	}
	if err := ValidPattern(rr.Match); err != nil {
		return r, d.errorAt(at+".match", "%v", err)
	}
	if err := checkHost(rr.Match, d.routes); err != nil {
		return r, d.errorAt(at+".match", "rule %q: %v", r.Name, err)
	}
	if err := checkRoutes(rr.Match, d.routes); err != nil {
		return r, d.errorAt(at+".match", "rule %q: %v", r.Name, err)
	}
	r.Match = rr.Match
	if strings.TrimSpace(rr.Limits) == "" {
		return r, d.errorAt(at+".limits", `limits are missing; expected limits such as "5/minute; 50/day"`)
	}
	ls, err := allowance.ParseLimits(rr.Limits)
	if err != nil {
		return r, d.errorAt(at+".limits", "%v", err)
	}
	r.Limits = ls
	r.Algorithm = allowance.FixedWindow
	if rr.Algorithm != "" {
		a, err := allowance.ParseAlgorithm(rr.Algorithm)
		if err != nil {
			return r, d.errorAt(at+".algorithm", "%v", err)
		}
		r.Algorithm = a
	}
	r.Cost = rr.Cost
	if rr.RefundGuard != "" {
		g, err := allowance.ParseLimit(rr.RefundGuard)
		if err != nil {
			return r, d.errorAt(at+".refund_guard", "%v", err)
		}
		r.RefundGuard = g
	}
	for k, s := range rr.RefundOn {
		reason := RefundReason(s)
		if !slices.Contains(RefundReasons(), reason) {
			return r, d.errorAt(fmt.Sprintf("%s.refund_on[%d]", at, k), "unknown refund reason %q; expected %s", s, refundReasonList)
		}
		if slices.Contains(r.RefundOn, reason) {
			return r, d.errorAt(fmt.Sprintf("%s.refund_on[%d]", at, k), "refund reason %q is given twice", s)
		}
		r.RefundOn = append(r.RefundOn, reason)
	}
	r.FailOpen = rr.FailOpen
	r.IdempotencyKey = matchesSubmit(rr.Match)
	if rr.IdempotencyKey != nil {
		r.IdempotencyKey = *rr.IdempotencyKey
	}
	if err := r.Validate(); err != nil {
		// Point at the field the error is about.
		field := at
		if re, ok := errors.AsType[*allowance.RuleError](err); ok {
			if name, ok := ruleFields[re.Field]; ok {
				field = at + "." + name
			}
		}
		return r, d.errorAt(field, "%v", err)
	}
	return r, nil
}

// ruleFields are the YAML names of the fields of allowance.Rule.
var ruleFields = map[string]string{
	"Name":        "name",
	"Limits":      "limits",
	"Algorithm":   "algorithm",
	"Cost":        "cost",
	"RefundGuard": "refund_guard",
}

// parseAuthFailures parses server.auth_failures: one limit, or "off" (the
// zero Limit).
func parseAuthFailures(text string) (allowance.Limit, error) {
	switch {
	case text == "off":
		return allowance.Limit{}, nil
	case strings.TrimSpace(text) == "":
		return allowance.Limit{}, errors.New(`empty; expected a limit such as "10/minute", or off to turn the limit off`)
	case strings.ContainsAny(text, ";,"):
		return allowance.Limit{}, fmt.Errorf(`%q: expected one limit, such as "10/minute", or off`, text)
	}
	l, err := allowance.ParseLimit(text)
	if err != nil {
		return allowance.Limit{}, fmt.Errorf("%w (or off to turn the limit off)", err)
	}
	return l, nil
}

// parseRetention parses server.retention: a duration such as 720h, a
// number of days such as 30d, or off (or 0) for zero: keep tasks forever.
func parseRetention(text string) (time.Duration, error) {
	const want = "expected a duration of at least 1h, such as 30d or 720h, or off to keep finished tasks forever"
	switch text {
	case "off", "0":
		return 0, nil
	case "":
		return 0, errors.New("empty; " + want)
	}
	var v time.Duration
	var err error
	if days, ok := strings.CutSuffix(text, "d"); ok {
		var n int
		if n, err = strconv.Atoi(days); err == nil && (n < 0 || n > 100*365) {
			err = errors.New("out of range")
		}
		v = time.Duration(n) * 24 * time.Hour
	} else {
		v, err = time.ParseDuration(text)
	}
	if err != nil || v < MinRetention {
		return 0, fmt.Errorf("%q: %s", text, want)
	}
	return v, nil
}

// ValidPattern reports whether pattern is a valid net/http ServeMux pattern
// ("[METHOD ][HOST]/[PATH]"), with an error that says what is wrong.
func ValidPattern(pattern string) (err error) {
	if strings.TrimSpace(pattern) != pattern {
		return fmt.Errorf("route pattern %q has leading or trailing spaces", pattern)
	}
	// ServeMux is the authority on its own syntax; it reports a bad
	// pattern by panicking.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("route pattern %q: %v; expected [METHOD ][HOST]/[PATH], such as \"POST /v1/tasks\"", pattern, p)
		}
	}()
	http.NewServeMux().Handle(pattern, http.NotFoundHandler())
	return nil
}

// yamlError turns an error of the YAML library into an *Error.
func yamlError(name string, err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{File: name, Msg: ye.GetMessage()}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
		var te *yaml.TypeError
		var ue *yaml.UnknownFieldError
		var ne *yaml.UnexpectedNodeTypeError
		switch {
		case errors.As(err, &te):
			e.Msg = fmt.Sprintf("a %s cannot be used here; expected a %s", yamlKind(te.SrcType.String()), yamlKind(te.DstType.String()))
		case errors.As(err, &ne):
			e.Msg = fmt.Sprintf("a %s was used where a %s is expected", yamlKind(ne.Actual.YAMLName()), yamlKind(ne.Expected.YAMLName()))
		case errors.As(err, &ue):
			e.Msg += "; expected the keys server (max_body_bytes, shutdown_timeout, check_timeout, lease, max_attempts, auth_failures) " +
				"and rules (each with name, match, limits, algorithm, cost, refund_on, refund_guard, fail_open)"
		}
		return e
	}
	return &Error{File: name, Msg: err.Error()}
}

// yamlKind names a Go type of the decoder's errors as a YAML user would.
func yamlKind(goType string) string {
	goType = strings.TrimLeft(goType, "*")
	switch {
	case strings.HasPrefix(goType, "[]"), goType == "sequence":
		return "list"
	case strings.HasPrefix(goType, "map"), strings.Contains(goType, "raw"), strings.Contains(goType, "struct"):
		return "mapping"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "float"), goType == "integer":
		return "number"
	case goType == "bool":
		return "boolean (true or false)"
	case goType == "string":
		return "string"
	}
	return goType
}
