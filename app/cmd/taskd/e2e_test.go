package main

// End-to-end tests: they build the taskd binary, run it on a free loopback
// port against real stores (SQLite or PostgreSQL for tasks; memory, Redis or
// a Redis Cluster for limits) and talk HTTP to it, as a user would.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/internal/redistest"
)

// taskdBin is the binary TestMain built.
var taskdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "taskd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	taskdBin = filepath.Join(dir, "taskd")
	// go test puts its own GOROOT/bin first on PATH, so this is the go
	// command running the tests.
	args := []string{"build", "-o", taskdBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build taskd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// e2eConfig is the configuration of the end-to-end runs. create-task uses a
// sliding log over an hour, which is exact and has no window boundary for a
// test to cross, so "Remaining unchanged" and "decreased by exactly 1" are
// exact statements whatever the wall clock does.
const e2eConfig = `
server:
  shutdown_timeout: 5s
  lease: 10s
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 100/hour
    algorithm: sliding-log
    refund_on: [conflict]
  - name: read
    match: GET /v1/
    limits: 1000/minute
`

const createLimit = 100

// daemon is a running taskd process.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string // http://127.0.0.1:port
	logs *logBuffer
	done chan struct{}
	// killed is set by kill: the process died without a graceful stop.
	killed bool
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (d *daemon) kill() {
	d.killed = true
	_ = d.cmd.Process.Kill()
	<-d.done
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// writeConfig writes the end-to-end configuration and returns its path.
func writeConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "taskd.yaml")
	if err := os.WriteFile(p, []byte(e2eConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs taskd serve with args on a free port and waits until it
// listens. Cleanup stops it with SIGTERM and checks that it exits 0.
func start(t *testing.T, args ...string) *daemon {
	t.Helper()
	args = append([]string{"serve", "-addr", "127.0.0.1:0", "-log-format", "json", "-log-level", "debug"}, args...)
	cmd := exec.Command(taskdBin, args...)
	cmd.Env = cleanEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, cmd: cmd, logs: &logBuffer{}, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(d.logs, line)
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "taskd listening" {
				addr <- rec.Addr
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); close(d.done) }()
	select {
	case a := <-addr:
		d.base = "http://" + a
	case err := <-exited:
		t.Fatalf("taskd %s exited before listening: %v\n%s", strings.Join(args, " "), err, d.logs)
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("taskd did not listen within 30s\n%s", d.logs)
	}
	t.Cleanup(func() {
		if d.killed {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-d.done
			t.Errorf("taskd did not stop within 20s of SIGTERM\n%s", d.logs)
			return
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("taskd exited with %d after SIGTERM, want 0\n%s", code, d.logs)
		}
		if strings.Contains(d.logs.String(), "WARNING: DATA RACE") {
			t.Errorf("taskd reported a data race\n%s", d.logs)
		}
		if t.Failed() {
			t.Logf("taskd logs:\n%s", d.logs)
		}
	})
	return d
}

// cleanEnv is the test's environment without TASKD_ variables, so that a
// developer's settings cannot change what the tests run.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TASKD_") {
			env = append(env, kv)
		}
	}
	return env
}

// createKey runs taskd keys create and returns the key it prints.
func createKey(t *testing.T, db, user string) string {
	t.Helper()
	cmd := exec.Command(taskdBin, "keys", "create", "-user", user, "-db", db)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("taskd keys create -user %s: %v\n%s", user, err, stderr.String())
	}
	out := stdout.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1 || !strings.HasSuffix(out, "\n") || !strings.HasPrefix(lines[0], "tk_") || len(lines[0]) != 46 {
		t.Fatalf("taskd keys create printed %q; want one line with a tk_ key", out)
	}
	return lines[0]
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

var client = &http.Client{Timeout: 20 * time.Second}

func (d *daemon) do(method, path, key, body string) reply {
	d.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, d.base+path, rd)
	if err != nil {
		d.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		d.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return reply{res.StatusCode, res.Header, b}
}

func (r reply) want(t *testing.T, status int) reply {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	ct := r.header.Get("Content-Type")
	if status >= 400 && ct != "application/problem+json" {
		t.Fatalf("error %d has Content-Type %q, want application/problem+json", status, ct)
	}
	return r
}

func (r reply) decode(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return m
}

func (r reply) remaining(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(r.header.Get("X-RateLimit-Remaining"))
	if err != nil {
		t.Fatalf("X-RateLimit-Remaining %q: %v", r.header.Get("X-RateLimit-Remaining"), err)
	}
	return n
}

// createUsed returns how much of create-task's limit user has used, from
// GET /v1/ratelimit (which charges only the read rule).
func (d *daemon) createUsed(key string) int {
	d.t.Helper()
	var body struct {
		Limits []struct {
			Rule string `json:"rule"`
			Used int    `json:"used"`
		} `json:"limits"`
	}
	r := d.do("GET", "/v1/ratelimit", key, "").want(d.t, http.StatusOK)
	if err := json.Unmarshal(r.body, &body); err != nil {
		d.t.Fatal(err)
	}
	for _, l := range body.Limits {
		if l.Rule == "create-task" {
			return l.Used
		}
	}
	d.t.Fatalf("GET /v1/ratelimit has no create-task limit: %s", r.body)
	return 0
}

// metric returns the value of the sample named exactly series (name and
// labels as /metrics prints them), or 0 when absent.
func (d *daemon) metric(series string) float64 {
	d.t.Helper()
	r := d.do("GET", "/metrics", "", "").want(d.t, http.StatusOK)
	for line := range strings.SplitSeq(string(r.body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				d.t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return 0
}

const sleepLong = `{"kind":"sleep","input":{"seconds":60}}`

// scenario is the story every backend must tell the same way.
func scenario(t *testing.T, db string, limitArgs ...string) {
	alice := createKey(t, db, "alice")
	bob := createKey(t, db, "bob")
	carol := createKey(t, db, "carol")
	d := start(t, append([]string{"-db", db, "-config", writeConfig(t), "-workers", "2"}, limitArgs...)...)

	d.do("GET", "/healthz", "", "").want(t, http.StatusOK)
	ready := d.do("GET", "/readyz", "", "").want(t, http.StatusOK).decode(t)
	if checks, _ := ready["checks"].(map[string]any); checks["database"] != "ok" || (len(limitArgs) > 0 && checks["limits"] != "ok") {
		t.Fatalf("readyz: %v", ready)
	}

	// 401: no key, a malformed key, an unknown key.
	d.do("GET", "/v1/tasks", "", "").want(t, http.StatusUnauthorized)
	d.do("POST", "/v1/tasks", "not-a-key", sleepLong).want(t, http.StatusUnauthorized)
	d.do("POST", "/v1/tasks", "tk_"+strings.Repeat("A", 43), sleepLong).want(t, http.StatusUnauthorized)

	// Submit: 202, Location, one attempt charged.
	r := d.do("POST", "/v1/tasks", alice, sleepLong).want(t, http.StatusAccepted)
	task := r.decode(t)
	id, _ := task["id"].(string)
	if r.header.Get("Location") != "/v1/tasks/"+id || task["kind"] != "sleep" || task["created_at"] == nil {
		t.Fatalf("202: %s, Location %q", r.body, r.header.Get("Location"))
	}
	left := r.remaining(t)
	if left != createLimit-1 {
		t.Fatalf("remaining after the first submit: %d, want %d", left, createLimit-1)
	}

	// Submit again while it is active: 409 naming it, budget unchanged.
	for i := range 4 {
		r = d.do("POST", "/v1/tasks", alice, `{"kind":"echo","input":"again"}`).want(t, http.StatusConflict)
		if p := r.decode(t); p["active_task_id"] != id {
			t.Fatalf("409 #%d: %s, want active_task_id %s", i, r.body, id)
		}
		if got := r.remaining(t); got != left {
			t.Fatalf("409 #%d shows X-RateLimit-Remaining %d, want the unchanged %d", i, got, left)
		}
	}
	if used := d.createUsed(alice); used != 1 {
		t.Fatalf("after 1 submit and 4 conflicts create-task used = %d, want 1", used)
	}

	// Another user's task is not found; the owner sees it.
	d.do("GET", "/v1/tasks/"+id, bob, "").want(t, http.StatusNotFound)
	d.do("POST", "/v1/tasks/"+id+"/cancel", bob, "").want(t, http.StatusNotFound)
	d.do("GET", "/v1/tasks/"+id, alice, "").want(t, http.StatusOK)

	// 400s and a 413, each with a message that says what is wrong.
	for _, c := range []struct{ body, want string }{
		{`{"kind": "sleep", "input": {"seconds": 1}`, "Malformed JSON"},
		{`{"kind":"juggle"}`, `"juggle"`},
		{`{"kind":"sleep","input":{"seconds":-5}}`, "seconds"},
	} {
		p := d.do("POST", "/v1/tasks", carol, c.body).want(t, http.StatusBadRequest).decode(t)
		if detail, _ := p["detail"].(string); !strings.Contains(detail, c.want) {
			t.Errorf("400 for %s: detail %q does not contain %q", c.body, detail, c.want)
		}
	}
	big := `{"kind":"echo","input":"` + strings.Repeat("x", 70<<10) + `"}`
	d.do("POST", "/v1/tasks", carol, big).want(t, http.StatusRequestEntityTooLarge)

	// Cancel frees the slot; the next submit is charged again.
	d.do("POST", "/v1/tasks/"+id+"/cancel", alice, "").want(t, http.StatusOK)
	r = d.do("POST", "/v1/tasks", alice, sleepLong).want(t, http.StatusAccepted)
	if got := r.remaining(t); got != left-1 {
		t.Fatalf("submit after cancel shows X-RateLimit-Remaining %d, want %d", got, left-1)
	}
	id2, _ := r.decode(t)["id"].(string)
	d.do("POST", "/v1/tasks/"+id2+"/cancel", alice, "").want(t, http.StatusOK)

	// 40 concurrent submits: one task, one charge.
	concurrentSubmits(t, []*daemon{d}, alice, 3)

	// Refunds and checks show in the metrics, and refunds in the logs.
	if v := d.metric(`allowance_http_refunds_total{outcome="restored",rule="create-task"}`); v < 4+39 {
		t.Errorf("refunds restored = %v, want at least 43", v)
	}
	// 1 submit, 4 conflicts, 3 bad requests, 1 too large, 1 submit, 40.
	if v := d.metric(`allowance_http_checks_total{outcome="allowed",rule="create-task"}`); v != 50 {
		t.Errorf("checks allowed = %v, want 50", v)
	}
	if v := d.metric(`taskd_task_submits_total{outcome="conflict"}`); v != 4+39 {
		t.Errorf("conflict submits = %v, want 43", v)
	}
	if logs := d.logs.String(); !strings.Contains(logs, `"msg":"rate limit refunded"`) || !strings.Contains(logs, `"reason":"conflict"`) {
		t.Errorf("no DEBUG log of a conflict refund in:\n%s", logs)
	}
}

// concurrentSubmits sends 40 submits of user key at once, to one or several
// daemons in turn, while the user has no active task. Exactly one must be
// accepted and the others refused with 409, and only the accepted one stays
// charged: create-task's usage must then be usedAfter, one more than before.
// It cancels the accepted task.
//
// The budget (100/hour) leaves room for all 40 charges at once: each request
// is charged before its handler runs and refunded before its 409 is
// written, so with less room than concurrent requests some would get 429.
func concurrentSubmits(t *testing.T, ds []*daemon, key string, usedAfter int) {
	t.Helper()
	const n = 40
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		accepted []string
		ready    = make(chan struct{})
	)
	for i := range n {
		d := ds[i%len(ds)]
		wg.Go(func() {
			<-ready
			r := d.do("POST", "/v1/tasks", key, sleepLong)
			mu.Lock()
			defer mu.Unlock()
			statuses[r.status]++
			if r.status == http.StatusAccepted {
				var task struct{ ID string }
				_ = json.Unmarshal(r.body, &task)
				accepted = append(accepted, task.ID)
			}
		})
	}
	close(ready)
	wg.Wait()
	if statuses[http.StatusAccepted] != 1 || statuses[http.StatusConflict] != n-1 {
		t.Fatalf("40 concurrent submits answered %v; want one 202 and 39 409", statuses)
	}
	for _, d := range ds {
		if used := d.createUsed(key); used != usedAfter {
			t.Fatalf("after 40 concurrent submits create-task used = %d, want %d: only the accepted one is charged", used, usedAfter)
		}
	}
	ds[0].do("POST", "/v1/tasks/"+accepted[0]+"/cancel", key, "").want(t, http.StatusOK)
}

func TestE2EMemorySQLite(t *testing.T) {
	t.Parallel()
	scenario(t, "sqlite:"+filepath.Join(t.TempDir(), "taskd.db"))
}

func TestE2ERedis(t *testing.T) {
	t.Parallel()
	addr := redistest.Server(t)
	scenario(t, "sqlite:"+filepath.Join(t.TempDir(), "taskd.db"), "-redis", "redis://"+addr+"/0")
}

func TestE2ERedisCluster(t *testing.T) {
	t.Parallel()
	addrs := redistest.Cluster(t)
	scenario(t, "sqlite:"+filepath.Join(t.TempDir(), "taskd.db"), "-redis-cluster", strings.Join(addrs, ","))
}

func TestE2EPostgres(t *testing.T) {
	t.Parallel()
	scenario(t, pgtest.DB(t))
}

// Two taskd replicas sharing PostgreSQL for tasks and Redis for limits:
// concurrent submits spread over both still create one task and charge once,
// and a conflict on one replica is refunded in the budget both see.
func TestE2EReplicas(t *testing.T) {
	t.Parallel()
	db := pgtest.DB(t)
	redis := "redis://" + redistest.Server(t) + "/0"
	key := createKey(t, db, "alice")
	cfg := writeConfig(t)
	a := start(t, "-db", db, "-redis", redis, "-config", cfg, "-workers", "1")
	b := start(t, "-db", db, "-redis", redis, "-config", cfg, "-workers", "1")

	r := a.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusAccepted)
	left := r.remaining(t)
	id, _ := r.decode(t)["id"].(string)
	r = b.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusConflict)
	if got := r.remaining(t); got != left {
		t.Fatalf("409 on the other replica shows remaining %d, want %d", got, left)
	}
	b.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK)
	b.do("POST", "/v1/tasks/"+id+"/cancel", key, "").want(t, http.StatusOK)
	concurrentSubmits(t, []*daemon{a, b}, key, 2)
}

// With refund_on: [worker_failure], a task that fails in its worker gives
// its submit's attempt back, and the task records the refund's outcome.
func TestE2EWorkerFailureRefund(t *testing.T) {
	t.Parallel()
	db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
	cfg := filepath.Join(t.TempDir(), "taskd.yaml")
	conf := strings.Replace(e2eConfig, "refund_on: [conflict]", "refund_on: [conflict, worker_failure]", 1)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	key := createKey(t, db, "alice")
	d := start(t, "-db", db, "-config", cfg, "-workers", "1")

	ok := d.do("POST", "/v1/tasks", key, `{"kind":"echo","input":1}`).want(t, http.StatusAccepted).decode(t)
	failing := d.do("POST", "/v1/tasks", key, `{"kind":"sleep","input":{"seconds":0,"fail":true}}`)
	for failing.status == http.StatusConflict { // the echo task is still active
		time.Sleep(20 * time.Millisecond)
		failing = d.do("POST", "/v1/tasks", key, `{"kind":"sleep","input":{"seconds":0,"fail":true}}`)
	}
	id, _ := failing.want(t, http.StatusAccepted).decode(t)["id"].(string)
	var task map[string]any
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		task = d.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)
		if task["refund_outcome"] != nil || time.Now().After(deadline) {
			break
		}
	}
	if task["status"] != "failed" || task["refund_outcome"] != "restored" || task["refund_reason"] != "worker_failure" || task["refund_state"] != "done" {
		t.Fatalf("failed task: %v; want status failed and a done worker_failure refund, restored", task)
	}
	succeeded := d.do("GET", "/v1/tasks/"+ok["id"].(string), key, "").want(t, http.StatusOK).decode(t)
	if succeeded["status"] != "succeeded" || succeeded["refund_outcome"] != nil {
		t.Fatalf("succeeded task: %v; want no refund", succeeded)
	}
	if used := d.createUsed(key); used != 1 {
		t.Fatalf("create-task used = %d after one success and one refunded failure, want 1", used)
	}
	// The failure's refund, and one per conflict while the echo task ran.
	conflicts := d.metric(`taskd_task_submits_total{outcome="conflict"}`)
	if v := d.metric(`allowance_http_refunds_total{outcome="restored",rule="create-task"}`); v != conflicts+1 {
		t.Errorf("restored refunds = %v, want %v", v, conflicts+1)
	}
	if v := d.metric(`taskd_task_refunds_total{reason="worker_failure",state="done"}`); v != 1 {
		t.Errorf("task refunds done = %v, want 1", v)
	}
}

// SIGTERM hands a running task back to the queue; the next process runs it.
func TestE2EShutdownKeepsTasks(t *testing.T) {
	t.Parallel()
	db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
	cfg := filepath.Join(t.TempDir(), "taskd.yaml")
	if err := os.WriteFile(cfg, []byte(strings.Replace(e2eConfig, "shutdown_timeout: 5s", "shutdown_timeout: 200ms", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	key := createKey(t, db, "alice")
	d := start(t, "-db", db, "-config", cfg, "-workers", "1")
	id, _ := d.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusAccepted).decode(t)["id"].(string)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st := d.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)["status"]
		if st == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still %v after 15s", st)
		}
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-d.done
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, d.logs)
	}

	d2 := start(t, "-db", db, "-config", cfg, "-workers", "0")
	task := d2.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)
	if task["status"] != "queued" {
		t.Fatalf("after a graceful stop the running task is %v, want queued again", task["status"])
	}
	d2.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusConflict)
	d2.do("POST", "/v1/tasks/"+id+"/cancel", key, "").want(t, http.StatusOK)
}

// With Redis gone, /readyz says so and submits fail closed with 503 (the
// default fail_open: false); with Redis back, both recover.
func TestE2ERedisDown(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t)
	db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
	key := createKey(t, db, "alice")
	d := start(t, "-db", db, "-redis", "redis://"+redis.Addr()+"/0", "-config", writeConfig(t), "-workers", "0")
	d.do("GET", "/readyz", "", "").want(t, http.StatusOK)

	redis.Stop()
	p := d.do("GET", "/readyz", "", "").want(t, http.StatusServiceUnavailable).decode(t)
	if detail, _ := p["detail"].(string); !strings.Contains(detail, "limits") || strings.Contains(detail, redis.Addr()) {
		t.Errorf("readyz with Redis down: detail %q; want it to name the limits store and no address", detail)
	}
	d.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusServiceUnavailable)
	d.do("GET", "/healthz", "", "").want(t, http.StatusOK)

	redis.Restart()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if d.do("GET", "/readyz", "", "").status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readyz not OK within 15s of Redis coming back")
		}
	}
	r := d.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusAccepted)
	id, _ := r.decode(t)["id"].(string)
	d.do("POST", "/v1/tasks/"+id+"/cancel", key, "").want(t, http.StatusOK)
}

// A worker process dies with a task running; another process's reaper ends
// the task as stuck when its lease runs out and, with refund_on: [stuck],
// refunds the submit from the receipt stored with the task, in the budget
// both processes share in Redis.
func TestE2EStuckTaskRefundedByAnotherProcess(t *testing.T) {
	t.Parallel()
	redis := "redis://" + redistest.Server(t) + "/0"
	db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
	cfg := filepath.Join(t.TempDir(), "taskd.yaml")
	conf := strings.NewReplacer(
		"lease: 10s", "lease: 1s\n  max_attempts: 1",
		"refund_on: [conflict]", "refund_on: [conflict, stuck]",
	).Replace(e2eConfig)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	key := createKey(t, db, "alice")
	a := start(t, "-db", db, "-redis", redis, "-config", cfg, "-workers", "1")
	r := a.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusAccepted)
	if left := r.remaining(t); left != createLimit-1 {
		t.Fatalf("remaining after the submit: %d, want %d", left, createLimit-1)
	}
	id, _ := r.decode(t)["id"].(string)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st := a.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)["status"]
		if st == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still %v after 15s", st)
		}
	}
	a.kill()

	b := start(t, "-db", db, "-redis", redis, "-config", cfg, "-workers", "1")
	var task map[string]any
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		task = b.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)
		if task["refund_state"] == "done" || time.Now().After(deadline) {
			break
		}
	}
	if task["status"] != "stuck" || task["refund_reason"] != "stuck" || task["refund_outcome"] != "restored" {
		t.Fatalf("task after its worker died: %v; want stuck with a restored stuck refund", task)
	}
	if used := b.createUsed(key); used != 0 {
		t.Fatalf("create-task used = %d after the stuck task's refund, want 0", used)
	}
	if v := b.metric(`taskd_task_refunds_total{reason="stuck",state="done"}`); v != 1 {
		t.Errorf("stuck refunds done = %v, want 1", v)
	}
	r = b.do("POST", "/v1/tasks", key, sleepLong).want(t, http.StatusAccepted)
	id2, _ := r.decode(t)["id"].(string)
	b.do("POST", "/v1/tasks/"+id2+"/cancel", key, "").want(t, http.StatusOK)
}

// waitMetric polls /metrics until series reaches at least want, and fails
// the test after 20s.
func (d *daemon) waitMetric(series string, want float64) {
	d.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if d.metric(series) >= want {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s did not reach %v within 20s (is %v)", series, want, d.metric(series))
		}
	}
}

// A task fails while Redis, which holds the limits, is down: the refund's
// attempts fail and stay pending in the task database (the record and the
// metrics say so); when Redis is back the refund is retried and restores
// the attempt. Redis keeps its data across the outage (an append-only file
// synced on every write), as a production Redis would.
func TestE2ERefundWhileRedisDown(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
	cfg := filepath.Join(t.TempDir(), "taskd.yaml")
	conf := strings.NewReplacer(
		"refund_on: [conflict]", "refund_on: [conflict, worker_failure]",
		"limits: 1000/minute", "limits: 1000/minute\n    fail_open: true", // reads keep working without Redis
	).Replace(e2eConfig)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	key := createKey(t, db, "alice")
	d := start(t, "-db", db, "-redis", "redis://"+redis.Addr()+"/0", "-config", cfg, "-workers", "1")

	r := d.do("POST", "/v1/tasks", key, `{"kind":"sleep","input":{"seconds":1,"fail":true}}`).want(t, http.StatusAccepted)
	if left := r.remaining(t); left != createLimit-1 {
		t.Fatalf("remaining after the submit: %d, want %d", left, createLimit-1)
	}
	id, _ := r.decode(t)["id"].(string)
	redis.Stop()

	d.waitMetric(`taskd_task_refunds_total{reason="worker_failure",state="pending"}`, 1)
	task := d.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)
	if task["status"] != "failed" || task["refund_state"] != "pending" || task["refund_outcome"] != nil {
		t.Fatalf("task after a refund attempt with Redis down: %v; want failed with a pending refund", task)
	}
	if v := d.metric(`taskd_task_refund_records{state="pending"}`); v != 1 {
		t.Errorf("pending refund records = %v, want 1", v)
	}
	if !strings.Contains(d.logs.String(), "task refund failed; will retry") {
		t.Error("no log line says the failed refund will be retried")
	}

	redis.Restart()
	d.waitMetric(`taskd_task_refunds_total{reason="worker_failure",state="done"}`, 1)
	task = d.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)
	if task["refund_state"] != "done" || task["refund_outcome"] != "restored" {
		t.Fatalf("task after Redis came back: %v; want a done refund, restored", task)
	}
	if used := d.createUsed(key); used != 0 {
		t.Fatalf("create-task used = %d after the refund, want 0", used)
	}
	for state, want := range map[string]float64{"pending": 0, "done": 1, "abandoned": 0} {
		if v := d.metric(`taskd_task_refund_records{state="` + state + `"}`); v != want {
			t.Errorf("refund records %s = %v, want %v", state, v, want)
		}
	}
}

// Two processes with workers share PostgreSQL and Redis; users submit tasks
// that fail, spread over both. Each task runs once (one attempt), each
// refund is made once (the two processes' refund attempts add up to one per
// task, and no budget goes below what was charged before), and both
// processes report the same refund records.
func TestE2EReplicasRefundEachFailureOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.DB(t)
	redis := "redis://" + redistest.Server(t) + "/0"
	cfg := filepath.Join(t.TempDir(), "taskd.yaml")
	conf := strings.Replace(e2eConfig, "refund_on: [conflict]", "refund_on: [conflict, worker_failure]", 1)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	const users = 6
	keys := make([]string, users)
	for i := range keys {
		keys[i] = createKey(t, db, fmt.Sprintf("user%d", i))
	}
	ds := []*daemon{
		start(t, "-db", db, "-redis", redis, "-config", cfg, "-workers", "2"),
		start(t, "-db", db, "-redis", redis, "-config", cfg, "-workers", "2"),
	}
	ids := make([]string, users)
	for i, key := range keys {
		// An echo task first, so each user has one charge no refund may take.
		echo := ds[i%2].do("POST", "/v1/tasks", key, `{"kind":"echo","input":1}`).want(t, http.StatusAccepted).decode(t)
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if ds[0].do("GET", "/v1/tasks/"+echo["id"].(string), key, "").want(t, http.StatusOK).decode(t)["status"] == "succeeded" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("echo task not succeeded within 15s")
			}
		}
		r := ds[(i+1)%2].do("POST", "/v1/tasks", key, `{"kind":"sleep","input":{"seconds":0.2,"fail":true}}`).want(t, http.StatusAccepted)
		ids[i], _ = r.decode(t)["id"].(string)
	}
	ds[0].waitMetric(`taskd_task_refund_records{state="done"}`, users)
	for i, key := range keys {
		task := ds[i%2].do("GET", "/v1/tasks/"+ids[i], key, "").want(t, http.StatusOK).decode(t)
		if task["status"] != "failed" || task["attempts"] != 1.0 || task["refund_state"] != "done" || task["refund_outcome"] != "restored" {
			t.Errorf("user%d's failed task: %v; want failed after 1 attempt, refund done and restored", i, task)
		}
		if used := ds[(i+1)%2].createUsed(key); used != 1 {
			t.Errorf("user%d: create-task used = %d after an echo task and a refunded failure, want 1", i, used)
		}
	}
	var done float64
	for _, d := range ds {
		done += d.metric(`taskd_task_refunds_total{reason="worker_failure",state="done"}`)
		for state, want := range map[string]float64{"pending": 0, "done": users, "abandoned": 0} {
			if v := d.metric(`taskd_task_refund_records{state="` + state + `"}`); v != want {
				t.Errorf("refund records %s = %v, want %v", state, v, want)
			}
		}
	}
	if done != users {
		t.Errorf("refunds done by the two processes: %v, want %d", done, users)
	}
}

// A process is killed while its worker runs a task; after a restart the
// task's expired lease is reaped, the task queued again (max_attempts is
// 3) and run to the end by the new process: a crash loses no task.
func TestE2ERestartAfterKillRunsTaskAgain(t *testing.T) {
	t.Parallel()
	db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
	cfg := filepath.Join(t.TempDir(), "taskd.yaml")
	if err := os.WriteFile(cfg, []byte(strings.Replace(e2eConfig, "lease: 10s", "lease: 1s", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	key := createKey(t, db, "alice")
	a := start(t, "-db", db, "-config", cfg, "-workers", "1")
	id, _ := a.do("POST", "/v1/tasks", key, `{"kind":"sleep","input":{"seconds":1}}`).want(t, http.StatusAccepted).decode(t)["id"].(string)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st := a.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)["status"]
		if st == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task still %v after 15s", st)
		}
	}
	a.kill()

	b := start(t, "-db", db, "-config", cfg, "-workers", "1")
	var task map[string]any
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		task = b.do("GET", "/v1/tasks/"+id, key, "").want(t, http.StatusOK).decode(t)
		if task["status"] == "succeeded" || time.Now().After(deadline) {
			break
		}
	}
	if task["status"] != "succeeded" || task["attempts"] != 2.0 {
		t.Fatalf("task after its process was killed and another started: %v; want succeeded after 2 attempts", task)
	}
}
