package main

// The spec check: real taskd processes answer representative requests of
// every route, with every status the test can provoke, through Prism, an
// independent OpenAPI validator run as a proxy with --errors (it answers 500
// with an sl-violations header instead of any response api/openapi.yaml
// does not allow: an undocumented status, media type, header value or
// body). The answers Prism cannot route (405, unknown paths, the metrics
// address) are sent to taskd directly. Every answer's headers are then
// checked to be documented for its operation and status, which Prism does
// not do.

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	_ "modernc.org/sqlite"

	"github.com/allowancehq/allowance/internal/redistest"
)

const specPath = "../../api/openapi.yaml"

// specConfig makes the answers cheap to provoke: a small body limit (413)
// and a small limit of failed authentications (429). Every route is
// rate limited, so every answer of a handler carries the rate-limit
// headers.
const specConfig = `
server:
  max_body_bytes: 1024
  auth_failures: 4/hour
  shutdown_timeout: 2s
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 100/hour
    algorithm: sliding-log
    refund_on: [conflict, server_error]
  - name: read
    match: GET /v1/
    limits: 1000/hour
    refund_on: [server_error]
  - name: cancel
    match: POST /v1/tasks/{id}/cancel
    limits: 1000/hour
    refund_on: [server_error]
`

// tightConfig allows one request per user per hour on all of /v1/, so
// that the second request of a user to any route gets the rule's 429.
const tightConfig = `
server:
  shutdown_timeout: 2s
rules:
  - name: tight
    match: /v1/
    limits: 1/hour
`

// prismBin returns the Prism command, or skips the test (fails it in CI)
// saying how to install it.
func prismBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ALLOWANCE_TEST_PRISM"); p != "" {
		return p
	}
	if p, err := filepath.Abs("../../../.ci/node/node_modules/.bin/prism"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("prism"); err == nil {
		return p
	}
	msg := "Prism (@stoplight/prism-cli) is not installed: run `npm ci --prefix .ci/node` (Node.js 20 or later; the version is pinned in .ci/node/package-lock.json), or set ALLOWANCE_TEST_PRISM to a prism command"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// prism is a running validating proxy in front of one taskd.
type prism struct {
	base string
	logs *logBuffer
}

// startPrism runs Prism as a validating proxy of upstream on a free port
// and waits until it listens. Cleanup stops it.
func startPrism(t *testing.T, bin, upstream string) *prism {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	spec, err := filepath.Abs(specPath)
	if err != nil {
		t.Fatal(err)
	}
	// --errors: a response the spec does not allow becomes a 500 with
	// sl-violations. --validate-request=false: the test sends invalid
	// requests on purpose, and taskd, not Prism, must answer them.
	cmd := exec.Command(bin, "proxy", "--errors", "--validate-request=false", "--cors=false",
		"--host", "127.0.0.1", "--port", strconv.Itoa(port), spec, upstream)
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "FORCE_COLOR=0")
	p := &prism{base: "http://127.0.0.1:" + strconv.Itoa(port), logs: &logBuffer{}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	listening := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(p.logs, sc.Text())
			if strings.Contains(sc.Text(), "Prism is listening") {
				select {
				case listening <- struct{}{}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// Prism's npm launcher may start node as a child: end the group.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("prism logs:\n%s", p.logs)
		}
	})
	select {
	case <-listening:
	case <-done:
		t.Fatalf("prism exited before listening:\n%s", p.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("prism did not listen within 60s:\n%s", p.logs)
	}
	return p
}

// openAPI is the parsed spec.
type openAPI struct {
	doc   map[string]any
	paths map[string]any
}

func loadSpec(t *testing.T) *openAPI {
	t.Helper()
	data, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", specPath, err)
	}
	paths, _ := doc["paths"].(map[string]any)
	return &openAPI{doc: doc, paths: paths}
}

// deref follows v's $ref, if it has one.
func (s *openAPI) deref(v any) map[string]any {
	m, _ := v.(map[string]any)
	for range 10 {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var cur any = s.doc
		for part := range strings.SplitSeq(strings.TrimPrefix(ref, "#/"), "/") {
			c, _ := cur.(map[string]any)
			cur = c[part]
		}
		m, _ = cur.(map[string]any)
	}
	return m
}

// response returns the spec's response for status of method on path (a
// path of the spec, such as /v1/tasks/{id}); for 405, of any operation of
// the path, since 405 answers the methods that have none.
func (s *openAPI) response(path, method string, status int) (map[string]any, error) {
	item, _ := s.paths[path].(map[string]any)
	if item == nil {
		return nil, fmt.Errorf("the spec has no path %s", path)
	}
	code := strconv.Itoa(status)
	var ops []string
	if status == http.StatusMethodNotAllowed {
		for m := range item {
			ops = append(ops, m)
		}
		slices.Sort(ops)
	} else {
		ops = []string{strings.ToLower(method)}
	}
	for _, m := range ops {
		op, _ := item[m].(map[string]any)
		rs, _ := op["responses"].(map[string]any)
		if r, ok := rs[code]; ok {
			return s.deref(r), nil
		}
	}
	return nil, fmt.Errorf("the spec has no response %s for %s %s", code, method, path)
}

// methods returns the methods the spec documents for path, upper case.
func (s *openAPI) methods(path string) []string {
	item, _ := s.paths[path].(map[string]any)
	var out []string
	for m := range item {
		switch m {
		case "get", "put", "post", "delete", "options", "head", "patch", "trace":
			out = append(out, strings.ToUpper(m))
		}
	}
	return out
}

// Headers any HTTP answer may have, which the spec need not list.
var transportHeaders = []string{"content-type", "content-length", "date", "connection", "keep-alive", "transfer-encoding", "vary"}

// checkDocumented reports every header of an answer that its response in
// the spec does not list, every required one it lacks, and a media type
// the response does not list; for a problem, the members RFC 9457 and the
// spec require.
func (s *openAPI) checkDocumented(path, method string, r reply) []string {
	resp, err := s.response(path, method, r.status)
	if err != nil {
		return []string{err.Error()}
	}
	var errs []string
	documented := map[string]bool{}
	hs, _ := resp["headers"].(map[string]any)
	for name, h := range hs {
		documented[strings.ToLower(name)] = true
		if req, _ := s.deref(h)["required"].(bool); req && r.header.Get(name) == "" {
			errs = append(errs, fmt.Sprintf("required header %s is missing", name))
		}
	}
	for name := range r.header {
		n := strings.ToLower(name)
		if !documented[n] && !slices.Contains(transportHeaders, n) && n != "sl-violations" {
			errs = append(errs, fmt.Sprintf("header %s: %q is not documented", name, r.header.Get(name)))
		}
	}
	content, _ := resp["content"].(map[string]any)
	ct := strings.TrimSpace(strings.Split(r.header.Get("Content-Type"), ";")[0])
	if _, ok := content[ct]; !ok && len(content) > 0 {
		errs = append(errs, fmt.Sprintf("media type %q is not documented", ct))
	}
	if ct == "application/problem+json" {
		var p map[string]any
		if err := json.Unmarshal(r.body, &p); err != nil {
			errs = append(errs, "problem body: "+err.Error())
		} else if st, _ := p["status"].(float64); int(st) != r.status || p["type"] == nil || p["title"] == nil {
			errs = append(errs, fmt.Sprintf("problem body %s lacks type or title, or its status is not %d", r.body, r.status))
		}
	}
	return errs
}

// specClient sends requests to one taskd, through its Prism or directly,
// and checks each answer.
type specClient struct {
	t       *testing.T
	spec    *openAPI
	d       *daemon
	prism   *prism
	checked map[string]bool // "METHOD /spec/path STATUS" seen
	header  http.Header     // added to the requests of viaHeader
}

// send sends method target (the request's path and query) with key and
// body to base, and checks that the answer has one of the statuses want and
// is what the spec documents for specPath (an empty specPath: a path the
// spec has not, whose answer must be a problem).
func (c *specClient) send(base, method, target, specPath, key, body string, want ...int) reply {
	c.t.Helper()
	return c.sendType(base, method, target, specPath, key, body, "application/json", want...)
}

// sendType is send with the body's Content-Type.
func (c *specClient) sendType(base, method, target, specPath, key, body, contentType string, want ...int) reply {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+target, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	res, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, target, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	r := reply{res.StatusCode, res.Header, b}
	if v := r.header.Get("sl-violations"); v != "" {
		c.t.Errorf("%s %s answered %d, which api/openapi.yaml does not allow: %s\n%s", method, target, r.status, v, b)
		return r
	}
	if !slices.Contains(want, r.status) {
		c.t.Fatalf("%s %s: status %d, want %v: %s", method, target, r.status, want, b)
	}
	if specPath == "" {
		if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
			c.t.Errorf("%s %s answered %d with Content-Type %q, want a problem", method, target, r.status, ct)
		}
		return r
	}
	for _, e := range c.spec.checkDocumented(specPath, method, r) {
		c.t.Errorf("%s %s answered %d: %s", method, target, r.status, e)
	}
	c.checked[fmt.Sprintf("%s %s %d", method, specPath, r.status)] = true
	return r
}

// via sends through Prism; direct to taskd.
func (c *specClient) via(method, target, specPath, key, body string, want ...int) reply {
	c.t.Helper()
	return c.send(c.prism.base, method, target, specPath, key, body, want...)
}

// viaHeader is via with the request headers h added.
func (c *specClient) viaHeader(h http.Header, method, target, specPath, key, body string, want ...int) reply {
	c.t.Helper()
	c.header = h
	defer func() { c.header = nil }()
	return c.via(method, target, specPath, key, body, want...)
}

func (c *specClient) viaType(method, target, specPath, key, body, contentType string, want ...int) reply {
	c.t.Helper()
	return c.sendType(c.prism.base, method, target, specPath, key, body, contentType, want...)
}

func (c *specClient) direct(method, target, specPath, key, body string, want ...int) reply {
	c.t.Helper()
	return c.send(c.d.base, method, target, specPath, key, body, want...)
}

// checkAllow checks a 405's Allow: the methods the spec documents for
// specPath, each GET with HEAD.
func (c *specClient) checkAllow(r reply, specPath string) {
	c.t.Helper()
	want := c.spec.methods(specPath)
	if slices.Contains(want, "GET") {
		want = append(want, "HEAD")
	}
	got := strings.Split(r.header.Get("Allow"), ", ")
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		c.t.Errorf("405 on %s: Allow %q, want the documented methods %v", specPath, r.header.Get("Allow"), want)
	}
}

// waitLog waits for a JSON log line of d with msg and returns its addr.
func waitLogAddr(t *testing.T, d *daemon, msg string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for line := range strings.SplitSeq(d.logs.String(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
				return rec.Addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within 10s\n%s", msg, d.logs)
		}
	}
}

// TestSpecMatchesServer replays requests of every route and every status
// the test can provoke through Prism, and fails on any answer
// api/openapi.yaml does not allow.
func TestSpecMatchesServer(t *testing.T) {
	t.Parallel()
	bin := prismBin(t)
	spec := loadSpec(t)
	redis := redistest.Start(t)
	dir := t.TempDir()
	dbFile := filepath.Join(dir, "taskd.db")
	db := "sqlite:" + dbFile
	cfg := filepath.Join(dir, "taskd.yaml")
	tightCfg := filepath.Join(dir, "tight.yaml")
	for p, c := range map[string]string{cfg: specConfig, tightCfg: tightConfig} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	alice, bob := createKey(t, db, "alice"), createKey(t, db, "bob")
	tightDB := "sqlite:" + filepath.Join(dir, "tight.db")
	tightKeys := map[string]string{}
	for _, u := range []string{"carol", "dave", "erin", "frank", "gina", "hal"} {
		tightKeys[u] = createKey(t, tightDB, u)
	}

	d := start(t, "-db", db, "-redis", "redis://"+redis.Addr()+"/0", "-config", cfg, "-workers", "0", "-metrics-addr", "127.0.0.1:0")
	metricsBase := "http://" + waitLogAddr(t, d, "metrics listening")
	tight := start(t, "-db", tightDB, "-config", tightCfg, "-workers", "0")
	c := &specClient{t: t, spec: spec, d: d, prism: startPrism(t, bin, d.base), checked: map[string]bool{}}
	ct := &specClient{t: t, spec: spec, d: tight, prism: startPrism(t, bin, tight.base), checked: c.checked}

	unknownKey := "tk_" + strings.Repeat("A", 43)
	const sleep = `{"kind":"sleep","input":{"seconds":60}}`

	// Operations.
	c.via("GET", "/healthz", "/healthz", "", "", http.StatusOK)
	c.via("GET", "/readyz", "/readyz", "", "", http.StatusOK)
	c.via("GET", "/metrics", "/metrics", "", "", http.StatusNotFound) // on -metrics-addr
	ct.via("GET", "/metrics", "/metrics", "", "", http.StatusOK)
	c.direct("GET", "/metrics", "/metrics", "", "", http.StatusNotFound)
	c.send(metricsBase, "GET", "/metrics", "/metrics", "", "", http.StatusOK)
	c.checkAllow(c.send(metricsBase, "POST", "/metrics", "/metrics", "", "", http.StatusMethodNotAllowed), "/metrics")
	for _, p := range []string{"/healthz", "/readyz"} {
		c.checkAllow(c.direct("PUT", p, p, "", "", http.StatusMethodNotAllowed), p)
	}

	// Authentication. A request without a key is answered by Prism itself
	// (it checks the security scheme), so it goes to taskd directly.
	c.direct("GET", "/v1/tasks", "/v1/tasks", "", "", http.StatusUnauthorized)
	c.via("GET", "/v1/tasks", "/v1/tasks", unknownKey, "", http.StatusUnauthorized)
	c.via("POST", "/v1/tasks", "/v1/tasks", "not-a-key", sleep, http.StatusUnauthorized)

	// Submit: 202, 409, 400, 413; with an Idempotency-Key, the replayed
	// 202 and the 422 of a key reused for another request.
	idem := http.Header{"Idempotency-Key": {"spec-1"}}
	r := c.viaHeader(idem, "POST", "/v1/tasks", "/v1/tasks", alice, sleep, http.StatusAccepted)
	id, _ := r.decode(t)["id"].(string)
	if id == "" {
		t.Fatalf("the first submit answered %s", r.body)
	}
	r = c.viaHeader(idem, "POST", "/v1/tasks", "/v1/tasks", alice, sleep, http.StatusAccepted)
	if again, _ := r.decode(t)["id"].(string); again != id || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the retried submit answered %s, Idempotent-Replayed %q; want task %s replayed", r.body, r.header.Get("Idempotent-Replayed"), id)
	}
	c.viaHeader(idem, "POST", "/v1/tasks", "/v1/tasks", alice, `{"kind":"echo","input":"other"}`, http.StatusUnprocessableEntity)
	c.via("POST", "/v1/tasks", "/v1/tasks", alice, `{"kind":"echo","input":"again"}`, http.StatusConflict)
	c.via("POST", "/v1/tasks", "/v1/tasks", bob, `{"kind":"juggle"}`, http.StatusBadRequest)
	c.via("POST", "/v1/tasks", "/v1/tasks", bob, `{"kind":"sleep","input":{"seconds":-5}}`, http.StatusBadRequest)
	c.via("POST", "/v1/tasks", "/v1/tasks", bob, `{"kind":"echo","input":"`+strings.Repeat("x", 2048)+`"}`, http.StatusRequestEntityTooLarge)
	c.checkAllow(c.direct("DELETE", "/v1/tasks", "/v1/tasks", alice, "", http.StatusMethodNotAllowed), "/v1/tasks")
	c.viaType("POST", "/v1/tasks", "/v1/tasks", bob, "kind=echo", "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType)

	// List, get, usage.
	c.via("GET", "/v1/tasks", "/v1/tasks", alice, "", http.StatusOK)
	c.via("GET", "/v1/tasks?status=queued&limit=1", "/v1/tasks", alice, "", http.StatusOK)
	c.via("GET", "/v1/tasks?limit=0", "/v1/tasks", alice, "", http.StatusBadRequest)
	c.via("GET", "/v1/tasks?colour=red", "/v1/tasks", alice, "", http.StatusBadRequest)
	c.via("GET", "/v1/tasks/"+id, "/v1/tasks/{id}", alice, "", http.StatusOK)
	c.via("GET", "/v1/tasks/"+id, "/v1/tasks/{id}", bob, "", http.StatusNotFound)
	c.via("GET", "/v1/tasks/t_nope", "/v1/tasks/{id}", alice, "", http.StatusNotFound)
	c.checkAllow(c.direct("DELETE", "/v1/tasks/"+id, "/v1/tasks/{id}", alice, "", http.StatusMethodNotAllowed), "/v1/tasks/{id}")
	c.via("GET", "/v1/ratelimit", "/v1/ratelimit", alice, "", http.StatusOK)
	c.checkAllow(c.direct("POST", "/v1/ratelimit", "/v1/ratelimit", alice, "", http.StatusMethodNotAllowed), "/v1/ratelimit")

	// A path that is not an endpoint: 404 once authenticated.
	for _, p := range []string{"/v1/nope", "/nope"} {
		c.direct("GET", p, "", alice, "", http.StatusNotFound)
	}

	// The task database fails: every handler that reads or writes tasks
	// answers 503.
	sqlExec(t, dbFile, `ALTER TABLE tasks RENAME TO tasks_away`)
	c.via("POST", "/v1/tasks", "/v1/tasks", bob, `{"kind":"echo","input":1}`, http.StatusServiceUnavailable)
	c.via("GET", "/v1/tasks", "/v1/tasks", alice, "", http.StatusServiceUnavailable)
	c.via("GET", "/v1/tasks/"+id, "/v1/tasks/{id}", alice, "", http.StatusServiceUnavailable)
	c.via("POST", "/v1/tasks/"+id+"/cancel", "/v1/tasks/{id}/cancel", alice, "", http.StatusServiceUnavailable)
	sqlExec(t, dbFile, `ALTER TABLE tasks_away RENAME TO tasks`)

	// Cancel: 200, then 409; another user's task is not found.
	c.via("POST", "/v1/tasks/"+id+"/cancel", "/v1/tasks/{id}/cancel", bob, "", http.StatusNotFound)
	c.via("POST", "/v1/tasks/"+id+"/cancel", "/v1/tasks/{id}/cancel", alice, "", http.StatusOK)
	c.via("POST", "/v1/tasks/"+id+"/cancel", "/v1/tasks/{id}/cancel", alice, "", http.StatusConflict)
	c.checkAllow(c.direct("GET", "/v1/tasks/"+id+"/cancel", "/v1/tasks/{id}/cancel", alice, "", http.StatusMethodNotAllowed), "/v1/tasks/{id}/cancel")

	// Too many failed authentications from this address: 429 before the
	// key is looked up (4/hour; 3 failures so far).
	for i := 0; c.via("GET", "/v1/ratelimit", "/v1/ratelimit", unknownKey, "", http.StatusUnauthorized, http.StatusTooManyRequests).status != http.StatusTooManyRequests; i++ {
		if i == 5 {
			t.Fatal("no 429 after 8 failed authentications from one address, with auth_failures: 4/hour")
		}
	}
	c.via("GET", "/v1/tasks", "/v1/tasks", unknownKey, "", http.StatusTooManyRequests)
	c.via("POST", "/v1/tasks", "/v1/tasks", unknownKey, sleep, http.StatusTooManyRequests)
	c.via("POST", "/v1/tasks/"+id+"/cancel", "/v1/tasks/{id}/cancel", unknownKey, "", http.StatusTooManyRequests)
	c.via("GET", "/v1/tasks/"+id, "/v1/tasks/{id}", unknownKey, "", http.StatusTooManyRequests)

	// The limits store fails (rules fail closed): the limiter's 503, and
	// /readyz says so.
	redis.Stop()
	c.via("GET", "/readyz", "/readyz", "", "", http.StatusServiceUnavailable)
	c.via("GET", "/v1/ratelimit", "/v1/ratelimit", alice, "", http.StatusServiceUnavailable)
	c.via("POST", "/v1/tasks", "/v1/tasks", alice, sleep, http.StatusServiceUnavailable)
	redis.Restart()

	// A rule's own 429 on each route (1 request per user per hour).
	k := tightKeys
	r = ct.via("POST", "/v1/tasks", "/v1/tasks", k["carol"], sleep, http.StatusAccepted)
	tid, _ := r.decode(t)["id"].(string)
	if tid == "" {
		t.Fatalf("the first submit answered %s", r.body)
	}
	ct.via("POST", "/v1/tasks", "/v1/tasks", k["carol"], sleep, http.StatusTooManyRequests)
	ct.via("GET", "/v1/tasks", "/v1/tasks", k["dave"], "", http.StatusOK)
	ct.via("GET", "/v1/tasks", "/v1/tasks", k["dave"], "", http.StatusTooManyRequests)
	ct.via("GET", "/v1/tasks/"+tid, "/v1/tasks/{id}", k["erin"], "", http.StatusNotFound)
	ct.via("GET", "/v1/tasks/"+tid, "/v1/tasks/{id}", k["erin"], "", http.StatusTooManyRequests)
	ct.via("POST", "/v1/tasks/"+tid+"/cancel", "/v1/tasks/{id}/cancel", k["frank"], "", http.StatusNotFound)
	ct.via("POST", "/v1/tasks/"+tid+"/cancel", "/v1/tasks/{id}/cancel", k["frank"], "", http.StatusTooManyRequests)
	ct.via("GET", "/v1/ratelimit", "/v1/ratelimit", k["gina"], "", http.StatusOK)
	ct.via("GET", "/v1/ratelimit", "/v1/ratelimit", k["gina"], "", http.StatusTooManyRequests)
	// A 405 of a rate-limited method, with the rate-limit headers.
	ct.checkAllow(ct.direct("DELETE", "/v1/tasks", "/v1/tasks", k["hal"], "", http.StatusMethodNotAllowed), "/v1/tasks")

	// Each route got a success, and each status the test could provoke.
	for _, want := range []string{
		"POST /v1/tasks 202", "POST /v1/tasks 400", "POST /v1/tasks 401", "POST /v1/tasks 409", "POST /v1/tasks 413", "POST /v1/tasks 415", "POST /v1/tasks 422", "POST /v1/tasks 429", "POST /v1/tasks 503",
		"GET /v1/tasks 200", "GET /v1/tasks 400", "GET /v1/tasks 401", "GET /v1/tasks 429", "GET /v1/tasks 503", "DELETE /v1/tasks 405",
		"GET /v1/tasks/{id} 200", "GET /v1/tasks/{id} 404", "GET /v1/tasks/{id} 429", "GET /v1/tasks/{id} 503",
		"POST /v1/tasks/{id}/cancel 200", "POST /v1/tasks/{id}/cancel 404", "POST /v1/tasks/{id}/cancel 409", "POST /v1/tasks/{id}/cancel 429", "POST /v1/tasks/{id}/cancel 503",
		"GET /v1/ratelimit 200", "GET /v1/ratelimit 401", "POST /v1/ratelimit 405", "GET /v1/tasks/{id}/cancel 405", "DELETE /v1/tasks/{id} 405", "GET /v1/ratelimit 429", "GET /v1/ratelimit 503",
		"GET /healthz 200", "GET /readyz 200", "GET /readyz 503", "GET /metrics 200", "GET /metrics 404",
	} {
		if !c.checked[want] {
			t.Errorf("no answer %s was checked", want)
		}
	}
}

// sqlExec runs stmt on the SQLite database file path, as another process
// sharing it would.
func sqlExec(t *testing.T, path, stmt string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}
