package tasks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/app/tasks/storetest"
)

// wait is how long a test waits for an event before it fails; events come
// much sooner, so this is no timing assertion.
const wait = 30 * time.Second

func openStore(t *testing.T, opts ...sqlitestore.Option) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "tasks.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// finished collects OnFinish calls.
type finished struct {
	mu    sync.Mutex
	calls map[string]int
	ch    chan tasks.Task
}

func newFinished() *finished {
	return &finished{calls: map[string]int{}, ch: make(chan tasks.Task, 100)}
}

func (f *finished) hook(_ context.Context, t tasks.Task) {
	f.mu.Lock()
	f.calls[t.ID]++
	f.mu.Unlock()
	f.ch <- t
}

func (f *finished) next(t *testing.T) tasks.Task {
	t.Helper()
	select {
	case got := <-f.ch:
		return got
	case <-time.After(wait):
		t.Fatal("no task finished")
	}
	return tasks.Task{}
}

// runPool runs p until the test ends or stop is called; stop waits for Run
// to return.
func runPool(t *testing.T, p *tasks.Pool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(wait):
				t.Error("Run did not return after its context was canceled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func create(t *testing.T, s tasks.Store, user, kind, input string) tasks.Task {
	t.Helper()
	task, err := s.Create(t.Context(), tasks.Task{UserID: user, Kind: kind, Input: json.RawMessage(input)})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// blocking is a kind that reports its start on started and then waits for
// release or its context.
func blocking(started chan<- string, release <-chan struct{}) tasks.Runner {
	return func(ctx context.Context, input json.RawMessage) (json.RawMessage, error) {
		started <- string(input)
		select {
		case <-release:
			return json.RawMessage(`"released"`), nil
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

func TestPoolRunsTasks(t *testing.T) {
	s := openStore(t)
	fin := newFinished()
	p := tasks.NewPool(s, tasks.Kinds(), 2, nil, tasks.WithOnFinish(fin.hook), tasks.WithPollInterval(20*time.Millisecond))
	runPool(t, p)

	echo := create(t, s, "alice", "echo", `{"say":"hi"}`)
	p.Notify()
	failing := create(t, s, "bob", "sleep", `{"seconds": 0.01, "fail": true}`)
	sleeping := create(t, s, "carol", "sleep", `{"seconds": 0}`)
	got := map[string]tasks.Task{}
	for range 3 {
		task := fin.next(t)
		got[task.ID] = task
	}
	if g := got[echo.ID]; g.Status != tasks.StatusSucceeded || string(g.Output) != `{"say":"hi"}` || g.Attempts != 1 || g.FinishedAt == nil {
		t.Errorf("echo task = %+v; want succeeded with its input as output", g)
	}
	if g := got[failing.ID]; g.Status != tasks.StatusFailed || !strings.Contains(g.Error, "failed as asked") || g.Output != nil {
		t.Errorf("sleep with fail = %+v; want failed with the sleep's error", g)
	}
	if g := got[sleeping.ID]; g.Status != tasks.StatusSucceeded || string(g.Output) != `{"slept_seconds":0}` {
		t.Errorf("sleep task = %+v; want succeeded", g)
	}
	for _, want := range []tasks.Task{echo, failing, sleeping} {
		stored, err := s.Get(t.Context(), want.UserID, want.ID)
		if err != nil || stored.Status != got[want.ID].Status {
			t.Errorf("stored task %s = %s, %v; want %s", want.ID, stored.Status, err, got[want.ID].Status)
		}
	}
}

func TestPoolFailsUnknownKindAndPanics(t *testing.T) {
	s := openStore(t)
	fin := newFinished()
	kinds := map[string]tasks.Runner{
		"panic": func(context.Context, json.RawMessage) (json.RawMessage, error) { panic("oops") },
		"bad":   func(context.Context, json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{`), nil },
	}
	p := tasks.NewPool(s, kinds, 1, nil, tasks.WithOnFinish(fin.hook), tasks.WithPollInterval(20*time.Millisecond))
	runPool(t, p)
	for _, tc := range []struct{ kind, msg string }{
		{"nope", `kind "nope": unknown task kind`},
		{"panic", `kind "panic" panicked: oops`},
		{"bad", `kind "bad" returned output that is not valid JSON`},
	} {
		create(t, s, "alice", tc.kind, `null`)
		got := fin.next(t)
		if got.Status != tasks.StatusFailed || got.Error != tc.msg {
			t.Errorf("%s task = %s %q; want failed %q", tc.kind, got.Status, got.Error, tc.msg)
		}
	}
}

func TestPoolCancelStopsRunningSleep(t *testing.T) {
	for _, how := range []string{"Pool.Cancel", "heartbeat"} {
		t.Run(how, func(t *testing.T) {
			s := openStore(t)
			fin := newFinished()
			started := make(chan string, 1)
			sleepErr := make(chan error, 1)
			kinds := map[string]tasks.Runner{"sleep": func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
				started <- ""
				out, err := tasks.Sleep(ctx, in)
				sleepErr <- err
				return out, err
			}}
			// A short lease makes heartbeats come every 100ms.
			p := tasks.NewPool(s, kinds, 1, nil, tasks.WithOnFinish(fin.hook), tasks.WithLease(300*time.Millisecond),
				tasks.WithPollInterval(20*time.Millisecond))
			runPool(t, p)
			task := create(t, s, "alice", "sleep", `{"seconds": 3600}`)
			<-started
			if _, err := s.Cancel(t.Context(), "alice", task.ID); err != nil {
				t.Fatal(err)
			}
			if how == "Pool.Cancel" && !p.Cancel(task.ID) {
				t.Fatal("Pool.Cancel of the running task = false")
			}
			select {
			case err := <-sleepErr:
				if err == nil {
					t.Fatal("sleep ended without an error")
				}
			case <-time.After(wait):
				t.Fatal("the canceled sleep is still running")
			}
			// The next task runs, and OnFinish was not called for the canceled one.
			next := create(t, s, "alice", "echo", `1`)
			if got := fin.next(t); got.ID != next.ID {
				t.Errorf("OnFinish for %s (%s), want only %s", got.ID, got.Status, next.ID)
			}
			if stored, _ := s.Get(t.Context(), "alice", task.ID); stored.Status != tasks.StatusCanceled {
				t.Errorf("canceled task is %s", stored.Status)
			}
			if p.Cancel(task.ID) {
				t.Error("Pool.Cancel of a task no longer running = true")
			}
		})
	}
}

func TestPoolOnFinishOncePerTask(t *testing.T) {
	s := openStore(t)
	fin := newFinished()
	var mu sync.Mutex
	runs := map[string]int{}
	kinds := map[string]tasks.Runner{"count": func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		mu.Lock()
		runs[string(in)]++
		mu.Unlock()
		return in, nil
	}}
	// Two pools share the store, as two processes would.
	for i := range 2 {
		p := tasks.NewPool(s, kinds, 3, nil, tasks.WithOnFinish(fin.hook), tasks.WithPollInterval(10*time.Millisecond),
			tasks.WithOwner(fmt.Sprintf("pool%d", i)))
		runPool(t, p)
	}
	const n = 40
	for i := range n {
		create(t, s, fmt.Sprintf("u%d", i), "count", fmt.Sprintf(`"%d"`, i))
	}
	for range n {
		if got := fin.next(t); got.Status != tasks.StatusSucceeded {
			t.Errorf("task %s: %s %q", got.ID, got.Status, got.Error)
		}
	}
	fin.mu.Lock()
	defer fin.mu.Unlock()
	if len(fin.calls) != n {
		t.Errorf("OnFinish saw %d tasks, want %d", len(fin.calls), n)
	}
	for id, c := range fin.calls {
		if c != 1 {
			t.Errorf("OnFinish called %d times for %s", c, id)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for in, c := range runs {
		if c != 1 {
			t.Errorf("task %s ran %d times", in, c)
		}
	}
}

func TestPoolStopHandsTaskBack(t *testing.T) {
	s := openStore(t)
	started := make(chan string, 1)
	never := make(chan struct{})
	p := tasks.NewPool(s, map[string]tasks.Runner{"block": blocking(started, never)}, 1, nil,
		tasks.WithPollInterval(20*time.Millisecond))
	stop := runPool(t, p)
	task := create(t, s, "alice", "block", `1`)
	<-started
	stop()

	got, err := s.Get(t.Context(), "alice", task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != tasks.StatusQueued || got.Attempts != 0 || got.LeaseOwner != "" {
		t.Fatalf("after the pool stopped, the task is %+v; want queued again, 0 attempts, no lease", got)
	}
	// Another pool (a restarted process) runs it to the end.
	fin := newFinished()
	release := make(chan struct{})
	close(release)
	p2 := tasks.NewPool(s, map[string]tasks.Runner{"block": blocking(make(chan string, 1), release)}, 1, nil,
		tasks.WithOnFinish(fin.hook), tasks.WithPollInterval(20*time.Millisecond))
	runPool(t, p2)
	if done := fin.next(t); done.ID != task.ID || done.Status != tasks.StatusSucceeded || done.Attempts != 1 {
		t.Errorf("restarted pool finished %+v; want %s succeeded on attempt 1", done, task.ID)
	}
}

// A pool told to stop claims nothing new, but lets the task it runs finish
// within the grace period.
func TestPoolGracePeriodLetsTaskFinish(t *testing.T) {
	s := openStore(t)
	fin := newFinished()
	started := make(chan string, 1)
	release := make(chan struct{})
	p := tasks.NewPool(s, map[string]tasks.Runner{"block": blocking(started, release)}, 1, nil,
		tasks.WithOnFinish(fin.hook), tasks.WithGracePeriod(time.Hour), tasks.WithPollInterval(20*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	task := create(t, s, "alice", "block", `1`)
	<-started
	// The stop is told before the second task exists and before the first
	// one ends, so the worker that frees up must see it and claim nothing.
	cancel()
	queued := create(t, s, "bob", "block", `2`)
	close(release)
	if got := fin.next(t); got.ID != task.ID || got.Status != tasks.StatusSucceeded {
		t.Errorf("finished %+v; want %s succeeded", got, task.ID)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after its running task finished")
	}
	if got, _ := s.Get(t.Context(), "bob", queued.ID); got.Status != tasks.StatusQueued {
		t.Errorf("task created during the stop is %s, want queued", got.Status)
	}
}

func TestPoolReaperMarksStuck(t *testing.T) {
	clock := storetest.NewClock(time.Now())
	s := openStore(t, sqlitestore.WithClock(clock.Now))
	task := create(t, s, "alice", "echo", `1`)
	// A worker of a dead process claimed it and never came back.
	if _, ok, err := s.Claim(t.Context(), "dead", time.Minute); !ok || err != nil {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	clock.Advance(2 * time.Minute)
	fin := newFinished()
	p := tasks.NewPool(s, tasks.Kinds(), 1, nil, tasks.WithOnFinish(fin.hook),
		tasks.WithReaper(20*time.Millisecond, 1), tasks.WithPollInterval(20*time.Millisecond))
	runPool(t, p)
	got := fin.next(t)
	if got.ID != task.ID || got.Status != tasks.StatusStuck || got.Error == "" {
		t.Fatalf("OnFinish got %+v; want %s stuck", got, task.ID)
	}
	// The user's slot is free again.
	create(t, s, "alice", "echo", `2`)
}

func TestPoolReaperRequeues(t *testing.T) {
	clock := storetest.NewClock(time.Now())
	s := openStore(t, sqlitestore.WithClock(clock.Now))
	task := create(t, s, "alice", "echo", `"again"`)
	if _, ok, err := s.Claim(t.Context(), "dead", time.Minute); !ok || err != nil {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	clock.Advance(2 * time.Minute)
	fin := newFinished()
	p := tasks.NewPool(s, tasks.Kinds(), 1, nil, tasks.WithOnFinish(fin.hook),
		tasks.WithReaper(20*time.Millisecond, 3), tasks.WithPollInterval(20*time.Millisecond))
	runPool(t, p)
	got := fin.next(t)
	if got.ID != task.ID || got.Status != tasks.StatusSucceeded || got.Attempts != 2 {
		t.Fatalf("OnFinish got %+v; want %s succeeded on attempt 2", got, task.ID)
	}
}
