package main

// The load, the usage model and the metric helpers of the fault-injection
// tests (fault_test.go).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// faultConfig is the configuration of the fault runs: create-task counts in
// a sliding log over an hour (exact, no window boundary to cross, and a
// refund removes exactly the entry its charge added), refunds conflicts and
// server errors (as the default rules do), and has room for every request
// a run sends, so 429 is rare and the model stays about refunds.
const faultConfig = `
server:
  shutdown_timeout: 5s
  check_timeout: %s
  lease: 10s%s
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 100000/hour
    algorithm: sliding-log
    refund_on: [conflict, server_error]
    fail_open: %t
  - name: read
    match: GET /v1/
    limits: 100000/minute
`

// writeFaultConfig writes faultConfig with the check timeout, the
// create-task failure policy and server lines, and returns its path.
func writeFaultConfig(t *testing.T, checkTimeout time.Duration, failOpen bool, server ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "taskd.yaml")
	extra := ""
	for _, l := range server {
		extra += "\n  " + l
	}
	if err := os.WriteFile(p, []byte(fmt.Sprintf(faultConfig, checkTimeout, extra, failOpen)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Bodies of the load: a valid submit, and an invalid one (400: the client
// is at fault, so the charge stays).
const (
	validSubmit   = `{"kind":"sleep","input":{"seconds":60}}`
	invalidSubmit = `{"kind":"sleep","input":{"seconds":-1}}`
)

// limiterDown is the detail of the middleware's 503 when the limits store
// failed and the rule fails closed.
const limiterDown = "The rate limiter is unavailable"

// shot is one request of a load and what came of it.
type shot struct {
	user    int
	invalid bool // the body was invalidSubmit
	sent    time.Time
	got     time.Time // when the response arrived; zero when err != nil
	err     error     // no response (the connection failed)
	status  int
	limited bool // the response has rate-limit headers: the check answered
	detail  string
	taskID  string // of a 202
	// authLimited: a 429 of the per-address limit of failed
	// authentications (auth_failures), before create-task was charged.
	authLimited bool
}

// cost is what the response leaves charged once every settlement is made,
// by the model of issue 13:
//
//   - no rate-limit headers: the check did not answer; the request was
//     served unlimited (fail open) or refused with 503 (fail closed), and its
//     charge, if it landed, is voided: 0;
//   - 202, and 4xx other than 409 and 429 (the client is at fault): 1;
//   - 409 (refunded, conflict), 429 (nothing charged), 5xx (refunded,
//     server_error): 0.
//
// A shot without a response has no cost of its own: see the SIGKILL case.
func (s shot) cost() int {
	switch {
	case s.err != nil, !s.limited:
		return 0
	case s.status == http.StatusConflict, s.status == http.StatusTooManyRequests, s.status >= 500:
		return 0
	}
	return 1
}

// reachedServer reports whether the request may have reached a handler:
// it has a response, or its connection failed otherwise than by being
// refused (a refused connection never reached a server).
func (s shot) reachedServer() bool {
	return s.err == nil || !errors.Is(s.err, syscall.ECONNREFUSED)
}

// limiter503 reports whether the shot is the middleware's fail-closed 503.
func (s shot) limiter503() bool {
	return s.err == nil && s.status == http.StatusServiceUnavailable && !s.limited && strings.Contains(s.detail, limiterDown)
}

func (s shot) String() string {
	if s.err != nil {
		return fmt.Sprintf("user%d: %v", s.user, s.err)
	}
	return fmt.Sprintf("user%d: %d limited=%t invalid=%t %q", s.user, s.status, s.limited, s.invalid, s.detail)
}

// loadClient sends the load: keep-alive connections enough for every user,
// bounded waits.
func loadClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64},
	}
}

// fire sends one submit and returns its shot; it never fails the test.
func fire(c *http.Client, base, key string, user int, invalid bool) shot {
	s := shot{user: user, invalid: invalid, sent: time.Now()}
	body := validSubmit
	if invalid {
		body = invalidSubmit
	}
	req, err := http.NewRequest("POST", base+"/v1/tasks", strings.NewReader(body))
	if err != nil {
		s.err = err
		return s
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		s.err = err
		return s
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if err != nil {
		s.err = err
		return s
	}
	s.got, s.status = time.Now(), res.StatusCode
	s.limited = res.Header.Get("X-RateLimit-Remaining") != ""
	if s.status == http.StatusTooManyRequests && !s.limited {
		s.authLimited = true // the per-address limit of failed authentications
	}
	var p struct {
		ID     string `json:"id"`
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(b, &p)
	s.detail = p.Detail
	if s.status == http.StatusAccepted {
		s.taskID = p.ID
	}
	return s
}

// load is one goroutine per user submitting tasks, one every pace (or one
// after the other when pace is 0), until Stop or until it has sent
// loadPerUser requests. Every fifth request is invalid.
type load struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	shots []shot
	n     atomic.Int64 // responses and errors so far
	c     *http.Client
}

const (
	loadPace    = 25 * time.Millisecond
	loadPerUser = 600 // with loadPace: 15 s at most
)

// startLoad starts the load of keys (user i has keys[i]) against base.
func startLoad(base string, keys []string, pace time.Duration) *load {
	l := &load{stop: make(chan struct{}), c: loadClient()}
	for u, key := range keys {
		l.wg.Go(func() {
			var tick <-chan time.Time
			if pace > 0 {
				t := time.NewTicker(pace)
				defer t.Stop()
				tick = t.C
			}
			for i := range loadPerUser {
				s := fire(l.c, base, key, u, i%5 == 4)
				l.mu.Lock()
				l.shots = append(l.shots, s)
				l.mu.Unlock()
				l.n.Add(1)
				if tick == nil {
					select {
					case <-l.stop:
						return
					default:
					}
					continue
				}
				select {
				case <-l.stop:
					return
				case <-tick:
				}
			}
		})
	}
	return l
}

// Stop ends the load and returns every shot.
func (l *load) Stop() []shot {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.c.CloseIdleConnections()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.shots
}

// waitShots waits until the load has n shots, and fails the test (after
// stopping the load) when it has not within d.
func (l *load) waitShots(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); l.n.Load() < n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			got := l.n.Load()
			l.Stop()
			t.Fatalf("the load sent %d requests within %v, want %d", got, d, n)
		}
	}
}

// tally counts shots by status (or "error"), for messages.
func tally(shots []shot) map[string]int {
	m := map[string]int{}
	for _, s := range shots {
		k := strconv.Itoa(s.status)
		switch {
		case s.err != nil:
			k = "error"
		case s.authLimited:
			k += "-auth"
		case !s.limited:
			k += "-unlimited"
		}
		m[k]++
	}
	return m
}

// modelByUser sums the cost of each user's shots.
func modelByUser(users int, shots []shot) []int {
	m := make([]int, users)
	for _, s := range shots {
		m[s.user] += s.cost()
	}
	return m
}

// metrics returns the text of /metrics.
func (d *daemon) metrics() string {
	d.t.Helper()
	return string(d.do("GET", "/metrics", "", "").want(d.t, http.StatusOK).body)
}

// metricSum sums the samples of metric name in text whose labels include
// every one of labels (such as `rule="create-task"`).
func metricSum(text, name string, labels ...string) float64 {
	var sum float64
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		lbl, val := "", rest
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			lbl, val = rest[:end+1], rest[end+1:]
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(lbl, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// waitDrained waits until the middleware owes the store nothing
// (allowance_http_pending is 0 for every rule and kind), and fails the test
// after 30s. It returns the metrics text it saw then.
func (d *daemon) waitDrained() string {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		text := d.metrics()
		if metricSum(text, "allowance_http_pending") == 0 {
			return text
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("allowance_http_pending still %v after 30s:\n%s", metricSum(text, "allowance_http_pending"), grepLines(text, "allowance_http_"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settlement is what the metrics say of create-task's uncertain charges.
type settlement struct {
	uncertain, pendingVoid float64
	settled                map[string]float64 // by outcome
}

func (s settlement) String() string {
	return fmt.Sprintf("uncertain %v = settled %v + pending void %v", s.uncertain, s.settled, s.pendingVoid)
}

// checkSettlement checks the operator's invariant for create-task,
// uncertain_total = Σ uncertain_settled_total + pending{kind="void"}, and
// that nothing was abandoned (no charge may stay), and returns the figures.
func checkSettlement(t *testing.T, text string) settlement {
	t.Helper()
	const rule = `rule="create-task"`
	s := settlement{
		uncertain:   metricSum(text, "allowance_http_uncertain_total", rule),
		pendingVoid: metricSum(text, "allowance_http_pending", rule, `kind="void"`),
		settled:     map[string]float64{},
	}
	var sum float64
	for _, o := range []string{"voided", "refunded", "kept", "earlier", "abandoned"} {
		v := metricSum(text, "allowance_http_uncertain_settled_total", rule, `outcome="`+o+`"`)
		s.settled[o] = v
		sum += v
	}
	if s.uncertain != sum+s.pendingVoid {
		t.Errorf("settlement invariant broken: %v", s)
	}
	if s.settled["abandoned"] != 0 || s.settled["kept"] != 0 {
		t.Errorf("uncertain charges abandoned or kept (may stay charged): %v", s)
	}
	if v := metricSum(text, "allowance_http_refunds_total", rule, `outcome="abandoned"`); v != 0 {
		t.Errorf("%v queued refunds abandoned", v)
	}
	return s
}

func grepLines(text, prefix string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// listedTask is a task as GET /v1/tasks lists it.
type listedTask struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// userTasks returns every task of key's user, all pages, retrying a 503
// (a task store that is recovering) for up to 15s.
func (d *daemon) userTasks(key string) []listedTask {
	d.t.Helper()
	var out []listedTask
	before := ""
	for page := 0; page < 100; page++ {
		path := "/v1/tasks?limit=200"
		if before != "" {
			path += "&before=" + before
		}
		r := d.do("GET", path, key, "")
		for deadline := time.Now().Add(15 * time.Second); r.status == http.StatusServiceUnavailable && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			r = d.do("GET", path, key, "")
		}
		r.want(d.t, http.StatusOK)
		var body struct {
			Tasks      []listedTask `json:"tasks"`
			NextBefore string       `json:"next_before"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil {
			d.t.Fatal(err)
		}
		out = append(out, body.Tasks...)
		if body.NextBefore == "" {
			return out
		}
		before = body.NextBefore
	}
	d.t.Fatal("GET /v1/tasks: more than 100 pages")
	return nil
}

// checkTasks checks that key's user has exactly the tasks of its 202s
// (none lost, none made without a 202 beyond extra allowed) and at most one
// active. It returns the tasks that no 202 announced.
func (d *daemon) checkTasks(user int, key string, accepted map[string]bool, extraAllowed int) []string {
	d.t.Helper()
	listed := d.userTasks(key)
	seen := map[string]bool{}
	active := 0
	var extra []string
	for _, task := range listed {
		if seen[task.ID] {
			d.t.Errorf("user%d: task %s listed twice", user, task.ID)
		}
		seen[task.ID] = true
		if task.Status == "queued" || task.Status == "running" {
			active++
		}
		if !accepted[task.ID] {
			extra = append(extra, task.ID)
		}
	}
	if active > 1 {
		d.t.Errorf("user%d has %d active tasks, want at most 1: %+v", user, active, listed)
	}
	for id := range accepted {
		if !seen[id] {
			d.t.Errorf("user%d: task %s was accepted (202) but is lost", user, id)
		}
	}
	if len(extra) > extraAllowed {
		d.t.Errorf("user%d has %d tasks no 202 announced (%v); at most %d allowed", user, len(extra), extra, extraAllowed)
	}
	return extra
}

// makeUsers creates n users' keys in db and returns them.
func makeUsers(t *testing.T, db string, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = createKey(t, db, fmt.Sprintf("user%d", i))
	}
	return keys
}

// seed gives the first half of the users an active task (a 60 s sleep that
// stays queued: the runs have no workers), so their load gets 409s, and
// has every other user read its budget, so every key is in taskd's key
// cache before a fault. It returns the shots of the seeding submits, which
// the model counts.
func seed(t *testing.T, d *daemon, keys []string) []shot {
	t.Helper()
	var shots []shot
	for i, key := range keys {
		if i < len(keys)/2 {
			r := d.do("POST", "/v1/tasks", key, validSubmit).want(t, http.StatusAccepted)
			id, _ := r.decode(t)["id"].(string)
			shots = append(shots, shot{user: i, status: http.StatusAccepted, limited: true, taskID: id, sent: time.Now(), got: time.Now()})
		} else {
			d.createUsed(key)
		}
	}
	return shots
}
