package main

// Fault-injection tests (issue 13, "exact under faults"): real taskd
// processes under a load of 20 users, while Redis is stalled (SIGSTOP) or
// restarted, PostgreSQL's backends are terminated, or taskd itself is
// killed, and a corpus of hostile task inputs on both task databases. Each
// asserts every user's create-task usage, once the fault has healed and the
// settlement queue has drained, against the model of shot.cost: 0 double
// refunds (usage never below the model), 0 leaked charges (never above it,
// apart from the bound of a SIGKILL), 0 5xx beyond what the failure policy
// says. docs/reliability.md gives the guarantees and the figures.
//
// The load cases skip under the race detector (make test runs the package
// twice; they run in the plain pass): a load of 20 users against a
// race-instrumented taskd on two cores measures the detector, not taskd.

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/internal/redistest"
)

const faultUsers = 20

func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("fault-injection load: runs in the plain go test pass, not under -race")
	}
}

// checkStatuses fails the test for a shot the model has no place for: no
// response at all, or a status other than 202, 409 and 429 for a valid
// submit and 400 and 429 for an invalid one, except the middleware's 503
// when closed is true (the rule fails closed) and a handler's 503 when
// dbFaults is true (the task database was failing). It returns the number
// of 503s of each kind.
func checkStatuses(t *testing.T, shots []shot, closed, dbFaults bool) (limiter, handler int) {
	t.Helper()
	bad := 0
	for _, s := range shots {
		ok := false
		switch {
		case s.err != nil:
		case s.limiter503():
			ok, limiter = closed, limiter+1
		case s.status == http.StatusServiceUnavailable:
			ok, handler = dbFaults, handler+1
		case s.status == http.StatusTooManyRequests:
			ok = !s.authLimited
		case s.invalid:
			ok = s.status == http.StatusBadRequest
		default:
			ok = s.status == http.StatusAccepted || s.status == http.StatusConflict
		}
		if !ok {
			if bad < 10 {
				t.Errorf("unexpected answer %v", s)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d unexpected answers of %d: %v", bad, len(shots), tally(shots))
	}
	return limiter, handler
}

// checkExact compares every user's create-task usage with the model.
func checkExact(t *testing.T, d *daemon, keys []string, shots []shot) {
	t.Helper()
	model := modelByUser(len(keys), shots)
	var above, below, total int
	for u, key := range keys {
		used := d.createUsed(key)
		total += used
		switch {
		case used > model[u]:
			above += used - model[u]
			t.Errorf("user%d: create-task used %d, model %d: %d leaked charges", u, used, model[u], used-model[u])
		case used < model[u]:
			below += model[u] - used
			t.Errorf("user%d: create-task used %d, model %d: %d double refunds", u, used, model[u], model[u]-used)
		}
	}
	t.Logf("figures: %d requests %v; usage %d charges over %d users; %d leaked, %d double refunds",
		len(shots), tally(shots), total, len(keys), above, below)
}

// redisFault is what the Redis cases do to redis-server mid-load.
type redisFault int

const (
	pauseRedis   redisFault = iota // SIGSTOP for 2 s, then SIGCONT
	restartRedis                   // SIGKILL, then a new server on the same port
)

// Case 1: redis-server is stalled with SIGSTOP for 2 s under load, with the
// submit rule failing open and failing closed; checks time out after
// 200 ms, their charges are uncertain and voided. Once the server goes on
// (SIGCONT) and the settlement queue has drained, every user's usage is
// exactly the model's.
func TestFaultRedisPause(t *testing.T) {
	t.Parallel()
	skipUnderRace(t)
	for _, failOpen := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail_open=%t", failOpen), func(t *testing.T) {
			redisFaultCase(t, pauseRedis, failOpen)
		})
	}
}

// Case 2: redis-server is killed and started again on the same port with an
// empty dataset, under load. Charges made before the kill are gone with the
// data; each user's usage after the restart lies between the cost of the
// requests sent after the new server answered (their charges can only be
// on it) and the cost of the requests answered after the kill (a charge of
// any other request was made on the old server before the kill, and is
// gone).
func TestFaultRedisRestart(t *testing.T) {
	t.Parallel()
	skipUnderRace(t)
	for _, failOpen := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail_open=%t", failOpen), func(t *testing.T) {
			redisFaultCase(t, restartRedis, failOpen)
		})
	}
}

func redisFaultCase(t *testing.T, fault redisFault, failOpen bool) {
	redis := redistest.Start(t)
	db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
	keys := makeUsers(t, db, faultUsers)
	d := start(t, "-db", db, "-redis", "redis://"+redis.Addr()+"/0", "-config", writeFaultConfig(t, 200*time.Millisecond, failOpen), "-workers", "0")
	shots := seed(t, d, keys)

	l := startLoad(d.base, keys, loadPace)
	l.waitShots(t, 300, 20*time.Second)
	errorsBefore := metricSum(d.metrics(), "allowance_http_checks_total", `rule="create-task"`, `outcome="error_`)
	var faultAt, healedAt time.Time
	switch fault {
	case pauseRedis:
		faultAt = time.Now()
		redis.Pause()
		paused := true
		t.Cleanup(func() {
			if paused {
				redis.Resume()
			}
		})
		waitFailedChecks(t, d, l, errorsBefore+20)
		// The stall lasts 2 s from its start, whatever the wait took.
		time.Sleep(time.Until(faultAt.Add(2 * time.Second)))
		redis.Resume()
		paused = false
		healedAt = time.Now()
	case restartRedis:
		faultAt = time.Now()
		redis.Stop()
		waitFailedChecks(t, d, l, errorsBefore+20)
		// The server stays down 1 s from the kill, whatever the wait took.
		time.Sleep(time.Until(faultAt.Add(time.Second)))
		redis.Restart()
		healedAt = time.Now()
	}
	n := l.n.Load()
	l.waitShots(t, n+300, 20*time.Second)
	shots = append(shots, l.Stop()...)
	text := d.waitDrained()
	s := checkSettlement(t, text)
	limiter, _ := checkStatuses(t, shots, !failOpen, false)
	if errs := metricSum(text, "allowance_http_checks_total", `rule="create-task"`, `outcome="error_`); errs < errorsBefore+20 {
		t.Errorf("only %v failed checks: the fault did not show", errs)
	}
	t.Logf("figures: fault %v, %d limiter 503s; settlement: %v", healedAt.Sub(faultAt).Round(time.Millisecond), limiter, s)

	switch fault {
	case pauseRedis:
		if s.uncertain == 0 {
			t.Error("no uncertain charge: the stall did not catch a check in flight")
		}
		checkExact(t, d, keys, shots)
	case restartRedis:
		checkRestartBounds(t, d, keys, shots, faultAt, healedAt)
	}
}

// waitFailedChecks waits until create-task has had n failed checks (the
// fault shows), and fails the test after 15 s.
func waitFailedChecks(t *testing.T, d *daemon, l *load, n float64) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if metricSum(d.metrics(), "allowance_http_checks_total", `rule="create-task"`, `outcome="error_`) >= n {
			return
		}
		if time.Now().After(deadline) {
			l.Stop()
			t.Fatalf("create-task had fewer than %v failed checks 15 s into the fault", n)
		}
	}
}

// checkRestartBounds checks each user's usage after a Redis restart:
// lower ≤ usage ≤ upper, where lower is the cost of the requests sent after
// healed (the new server answered PING) and upper the cost of those
// answered after fault (the old server was killed).
func checkRestartBounds(t *testing.T, d *daemon, keys []string, shots []shot, fault, healed time.Time) {
	t.Helper()
	lower := make([]int, len(keys))
	upper := make([]int, len(keys))
	for _, s := range shots {
		if s.sent.After(healed) {
			lower[s.user] += s.cost()
		}
		if s.got.After(fault) {
			upper[s.user] += s.cost()
		}
	}
	var used, lo, hi, gone int
	for _, s := range shots {
		if !s.got.After(fault) {
			gone += s.cost()
		}
	}
	for u, key := range keys {
		got := d.createUsed(key)
		used, lo, hi = used+got, lo+lower[u], hi+upper[u]
		if got < lower[u] {
			t.Errorf("user%d: create-task used %d after the restart, below the %d charged on the new server: double refunds", u, got, lower[u])
		}
		if got > upper[u] {
			t.Errorf("user%d: create-task used %d after the restart, above the %d charged since the kill: leaked charges", u, got, upper[u])
		}
	}
	t.Logf("figures: %d requests %v; usage %d within [%d, %d]; %d charges made before the kill gone with the data",
		len(shots), tally(shots), used, lo, hi, gone)
}

// Case 3: PostgreSQL's backends of taskd's database are terminated, eight
// times, under load. A submit that fails because of the database answers
// 503 and is refunded (refund_on: server_error), so usage is exactly the
// model's; every 202's task exists, no task exists without its 202, and no
// user has two active tasks.
func TestFaultPostgresTerminate(t *testing.T) {
	t.Parallel()
	skipUnderRace(t)
	db := pgtest.DB(t)
	keys := makeUsers(t, db, faultUsers)
	d := start(t, "-db", db, "-config", writeFaultConfig(t, time.Second, false), "-workers", "0")
	shots := seed(t, d, keys)

	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	l := startLoad(d.base, keys, loadPace)
	terminated := 0
	for range 8 {
		l.waitShots(t, l.n.Load()+60, 20*time.Second)
		var n int
		err := conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n)
		if err != nil {
			l.Stop()
			t.Fatalf("terminate backends: %v", err)
		}
		terminated += n
	}
	l.waitShots(t, l.n.Load()+200, 20*time.Second)
	shots = append(shots, l.Stop()...)
	if terminated == 0 {
		t.Fatal("no backend was terminated")
	}
	d.waitDrained()
	_, handler := checkStatuses(t, shots, false, true)
	t.Logf("figures: %d backends terminated in 8 rounds; %d 503s from the task database, each refunded by the model", terminated, handler)
	checkExact(t, d, keys, shots)
	checkAllTasks(t, d, keys, shots, nil)
}

// checkAllTasks checks every user's tasks against the 202s (checkTasks),
// allowing extra[u] tasks without a 202 for user u, and returns how many
// each has.
func checkAllTasks(t *testing.T, d *daemon, keys []string, shots []shot, extra []int) []int {
	t.Helper()
	accepted := make([]map[string]bool, len(keys))
	for u := range accepted {
		accepted[u] = map[string]bool{}
	}
	for _, s := range shots {
		if s.taskID != "" {
			if accepted[s.user][s.taskID] {
				t.Errorf("user%d: task %s accepted twice", s.user, s.taskID)
			}
			accepted[s.user][s.taskID] = true
		}
	}
	found := make([]int, len(keys))
	for u, key := range keys {
		allowed := 0
		if extra != nil {
			allowed = extra[u]
		}
		found[u] = len(d.checkTasks(u, key, accepted[u], allowed))
	}
	return found
}

// Case 4: taskd is killed (SIGKILL) twice under load, on SQLite and on
// PostgreSQL, with the limits in Redis, and started again on the same
// database and Redis. A request in flight at the kill (sent, no response)
// may have been charged and never refunded: its 409's refund died with the
// process. The case measures that leak and checks its bound: per user,
// 0 ≤ usage − model ≤ requests in flight at the kills (plus 503s of the
// limiter, whose voids die with the process too: none while Redis is
// healthy). A task created by a request in flight (its 202 lost) is a
// charge that rightly stays: counted apart.
func TestFaultKillTaskd(t *testing.T) {
	t.Parallel()
	skipUnderRace(t)
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
			if backend == "postgres" {
				db = pgtest.DB(t)
			}
			redis := "redis://" + redistest.Server(t) + "/0"
			// With the default per-address limit of failed
			// authentications (10/minute): valid keys cost it nothing,
			// so 20 users whose keys the restarted process has never
			// seen all get in.
			cfg := writeFaultConfig(t, time.Second, false)
			keys := makeUsers(t, db, faultUsers)
			args := []string{"-db", db, "-redis", redis, "-config", cfg, "-workers", "0"}
			d := start(t, args...)
			shots := seed(t, d, keys)
			inflight := make([]int, len(keys))
			var inflightTotal int
			for range 2 {
				l := startLoad(d.base, keys, 0) // unpaced: ~20 requests in flight at any time
				l.waitShots(t, 300, 20*time.Second)
				d.kill()
				round := l.Stop()
				for _, s := range round {
					// No answer, and the connection was not refused: it
					// may have reached the handler.
					if s.err != nil && s.reachedServer() {
						inflight[s.user]++
						inflightTotal++
					}
					if s.limiter503() {
						inflight[s.user]++
					}
				}
				shots = append(shots, round...)
				d = start(t, args...)
			}
			l := startLoad(d.base, keys, loadPace)
			l.waitShots(t, 200, 20*time.Second)
			shots = append(shots, l.Stop()...)
			d.waitDrained()

			var answered []shot
			for _, s := range shots {
				if s.err == nil {
					answered = append(answered, s)
				}
			}
			checkStatuses(t, answered, true, false)
			model := modelByUser(len(keys), shots)
			orphans := checkAllTasks(t, d, keys, shots, inflight)
			var extraTotal, orphanTotal int
			for u, key := range keys {
				used := d.createUsed(key)
				extra := used - model[u]
				extraTotal += extra
				orphanTotal += orphans[u]
				switch {
				case extra < 0:
					t.Errorf("user%d: create-task used %d, model %d: %d double refunds", u, used, model[u], -extra)
				case extra > inflight[u]:
					t.Errorf("user%d: create-task used %d, model %d: %d charges beyond the model, more than the %d requests in flight at the kills", u, used, model[u], extra, inflight[u])
				case orphans[u] > extra:
					t.Errorf("user%d: %d tasks without a 202 but only %d charges beyond the model", u, orphans[u], extra)
				}
			}
			t.Logf("figures: %s, 2 kills: %d requests %v; %d in flight at the kills; %d charges beyond the model: %d for tasks created by requests in flight (their 202 lost), %d leaked (charged, never refunded)",
				backend, len(shots), tally(shots), inflightTotal, extraTotal, orphanTotal, extraTotal-orphanTotal)
		})
	}
}

// hostileInputs are task submits that every task database must refuse
// with 400, never a 5xx: strings a database cannot keep as given (NUL,
// invalid UTF-8, lone surrogates), numbers out of every range, nesting
// beyond the limit, and malformed JSON.
var hostileInputs = []struct{ name, body string }{
	{"NUL in a string", `{"kind":"echo","input":"a\u0000b"}`},
	{"NUL in a key", `{"kind":"echo","input":{"a\u0000":1}}`},
	{"NUL in a sleep field", `{"kind":"sleep","input":{"seconds":1,"\u0000":true}}`},
	{"raw NUL byte", "{\"kind\":\"echo\",\"input\":\"a\x00b\"}"},
	{"invalid UTF-8", "{\"kind\":\"echo\",\"input\":\"\xff\xfe\"}"},
	{"invalid UTF-8 in a key", "{\"kind\":\"echo\",\"input\":{\"\xc3\x28\":1}}"},
	{"overlong UTF-8", "{\"kind\":\"echo\",\"input\":\"\xc0\xaf\"}"},
	{"UTF-8 surrogate (CESU-8)", "{\"kind\":\"echo\",\"input\":\"\xed\xa0\x80\"}"},
	{"lone high surrogate", `{"kind":"echo","input":"\ud800"}`},
	{"lone low surrogate", `{"kind":"echo","input":"\udc00"}`},
	{"reversed surrogates", `{"kind":"echo","input":"\udc00\ud800"}`},
	{"high surrogate then a letter", `{"kind":"echo","input":"\ud800\u0041"}`},
	{"huge exponent", `{"kind":"echo","input":1e999999}`},
	{"huge negative exponent", `{"kind":"echo","input":-1e999999}`},
	{"tiny exponent", `{"kind":"echo","input":1e-999999}`},
	{"exponent past the limit", `{"kind":"echo","input":1e1001}`},
	{"1001 digits", `{"kind":"echo","input":` + "1" + strings.Repeat("0", 1000) + `}`},
	{"sleep seconds 1e999999", `{"kind":"sleep","input":{"seconds":1e999999}}`},
	{"sleep seconds 1e308 squared", `{"kind":"sleep","input":{"seconds":1e616}}`},
	{"nesting 101 deep", `{"kind":"echo","input":` + strings.Repeat("[", 101) + strings.Repeat("]", 101) + `}`},
	{"nesting 20000 deep", `{"kind":"echo","input":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`},
	{"objects 101 deep", `{"kind":"echo","input":` + strings.Repeat(`{"a":`, 101) + "1" + strings.Repeat("}", 101) + `}`},
	{"duplicate key", `{"kind":"echo","input":{"a":1,"a":2}}`},
	{"NaN", `{"kind":"echo","input":NaN}`},
	{"Infinity", `{"kind":"sleep","input":{"seconds":Infinity}}`},
	{"trailing garbage", `{"kind":"echo","input":1} x`},
	{"unterminated", `{"kind":"echo","input":"abc`},
	{"BOM", "\xef\xbb\xbf{\"kind\":\"echo\",\"input\":1}"},
	{"NUL in the kind", `{"kind":"echo\u0000","input":1}`},
	{"unknown kind with shell text", `{"kind":"rm -rf /","input":1}`},
}

// Case 5: the hostile-input corpus, on SQLite and on PostgreSQL: every
// input gets 400 (problem+json), none a 5xx, and each 400 stays charged
// (the client is at fault): create-task's usage is the corpus' size.
func TestFaultHostileInputs(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			db := "sqlite:" + filepath.Join(t.TempDir(), "taskd.db")
			if backend == "postgres" {
				db = pgtest.DB(t)
			}
			key := createKey(t, db, "mallory")
			d := start(t, "-db", db, "-config", writeFaultConfig(t, time.Second, false), "-workers", "0")
			for _, in := range hostileInputs {
				r := d.do("POST", "/v1/tasks", key, in.body)
				if r.status != http.StatusBadRequest || r.header.Get("Content-Type") != "application/problem+json" {
					t.Errorf("%s: %d %s, want 400 problem+json", in.name, r.status, r.body)
				}
			}
			if used := d.createUsed(key); used != len(hostileInputs) {
				t.Errorf("create-task used %d after %d hostile inputs, each a 400 that stays charged: want %d", used, len(hostileInputs), len(hostileInputs))
			}
			if v := d.metric(`taskd_task_submits_total{outcome="invalid"}`); v != float64(len(hostileInputs)) {
				t.Errorf("invalid submits = %v, want %d", v, len(hostileInputs))
			}
			if tasks := d.userTasks(key); len(tasks) != 0 {
				t.Errorf("hostile inputs made tasks: %+v", tasks)
			}
		})
	}
}
