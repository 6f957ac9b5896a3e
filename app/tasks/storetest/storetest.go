// Package storetest is the conformance suite of tasks.Store: every task
// store backend runs Run in its tests and must pass all of it.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
)

// Clock is a fake clock for stores and loops under test (a tasks.Clock);
// safe for concurrent use. Its timers (After) fire when Advance moves the
// clock to or past their time.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []timer
	changed chan struct{} // closed and replaced when a timer is added
}

type timer struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a clock that reads start until advanced.
func NewClock(start time.Time) *Clock { return &Clock{now: start, changed: make(chan struct{})} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now // buffered: never blocks
	}
	c.timers = kept
}

// After returns a channel that receives the clock's time once Advance has
// moved it d past now; d ≤ 0 fires at once.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, timer{at: c.now.Add(d), ch: ch})
	close(c.changed)
	c.changed = make(chan struct{})
	return ch
}

// WaitTimers waits until at least n timers are pending (a loop under test
// is waiting), or ctx is done, and returns ctx's error then.
func (c *Clock) WaitTimers(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		pending, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if pending >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Factory prepares a fresh, empty database for one test and returns a
// function that opens a store on it, reading the time from clock.Now. The
// suite may call open several times to get stores that share the database,
// as separate processes would; it migrates and closes them itself. open
// fails the test on error.
type Factory func(t *testing.T, clock *Clock) (open func() tasks.Store)

// Options tunes Run.
type Options struct {
	// Concurrency is the number of goroutines of the contention tests
	// (concurrent creates for one user); default 40.
	Concurrency int
}

// start is the suite's initial clock time: not on a microsecond, so stores
// must truncate consistently.
var start = time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.UTC)

type suite struct {
	t     *testing.T
	ctx   context.Context
	clock *Clock
	open  func() tasks.Store
	s     tasks.Store
	opts  Options
}

// Run runs the conformance suite, each test on a fresh database from f.
func Run(t *testing.T, f Factory, opts Options) {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 40
	}
	tests := []struct {
		name string
		run  func(*suite)
	}{
		{"MigrateIdempotent", testMigrateIdempotent},
		{"CreateGet", testCreateGet},
		{"CreateRejectsBadInput", testCreateRejectsBadInput},
		{"ReceiptByteExact", testReceiptByteExact},
		{"UsersIsolated", testUsersIsolated},
		{"OneActiveTask", testOneActiveTask},
		{"ConcurrentCreates", testConcurrentCreates},
		{"ConcurrentCreatesTwoStores", testConcurrentCreatesTwoStores},
		{"NewTaskAfterEnd", testNewTaskAfterEnd},
		{"IdempotencyKey", testIdempotencyKey},
		{"ConcurrentIdempotentCreates", testConcurrentIdempotentCreates},
		{"Cancel", testCancel},
		{"List", testList},
		{"ClaimOldestFirst", testClaimOldestFirst},
		{"ConcurrentClaims", testConcurrentClaims},
		{"Heartbeat", testHeartbeat},
		{"Finish", testFinish},
		{"Release", testRelease},
		{"ReapRequeuesThenStuck", testReap},
		{"RefundOutcome", testRefundOutcome},
		{"RefundQueue", testRefundQueue},
		{"ConcurrentRefundClaims", testConcurrentRefundClaims},
		{"Model", testModel},
		{"APIKeys", testAPIKeys},
		{"APIKeyList", testAPIKeyList},
		{"APIKeyTouch", testAPIKeyTouch},
		{"APIKeyRevoke", testAPIKeyRevoke},
		{"APIKeyRotate", testAPIKeyRotate},
		{"DeleteFinished", testDeleteFinished},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewClock(start)
			s := &suite{t: t, ctx: t.Context(), clock: clock, open: f(t, clock), opts: opts}
			s.s = s.store()
			if err := s.s.Migrate(s.ctx); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			tc.run(s)
		})
	}
}

// store opens a store on the test's database, closed at cleanup.
func (s *suite) store() tasks.Store {
	st := s.open()
	s.t.Cleanup(func() {
		if err := st.Close(); err != nil {
			s.t.Errorf("Close: %v", err)
		}
	})
	return st
}

func (s *suite) now() time.Time { return s.clock.Now().UTC().Truncate(time.Microsecond) }

func (s *suite) create(user, kind, input string) tasks.Task {
	s.t.Helper()
	t, err := s.s.Create(s.ctx, tasks.Task{UserID: user, Kind: kind, Input: json.RawMessage(input)})
	if err != nil {
		s.t.Fatalf("Create(%s, %s, %s): %v", user, kind, input, err)
	}
	return t
}

func (s *suite) get(user, id string) tasks.Task {
	s.t.Helper()
	t, err := s.s.Get(s.ctx, user, id)
	if err != nil {
		s.t.Fatalf("Get(%s, %s): %v", user, id, err)
	}
	return t
}

func (s *suite) claim(owner string, lease time.Duration) tasks.Task {
	s.t.Helper()
	t, ok, err := s.s.Claim(s.ctx, owner, lease)
	if err != nil || !ok {
		s.t.Fatalf("Claim(%s) = _, %v, %v; want a task", owner, ok, err)
	}
	return t
}

func (s *suite) list(user string, o tasks.ListOptions) []tasks.Task {
	s.t.Helper()
	ts, err := s.s.List(s.ctx, user, o)
	if err != nil {
		s.t.Fatalf("List(%s, %+v): %v", user, o, err)
	}
	return ts
}

func ids(ts []tasks.Task) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

// sameTask fails unless got equals want, JSON compared by meaning.
func sameTask(t *testing.T, what string, got, want tasks.Task) {
	t.Helper()
	if !jsonEqual(got.Input, want.Input) {
		t.Errorf("%s: Input = %s, want %s", what, got.Input, want.Input)
	}
	if !jsonEqual(got.Output, want.Output) {
		t.Errorf("%s: Output = %s, want %s", what, got.Output, want.Output)
	}
	got.Input, want.Input, got.Output, want.Output = nil, nil, nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}

func ptr(t time.Time) *time.Time { return &t }

func testMigrateIdempotent(s *suite) {
	for i := range 2 {
		if err := s.s.Migrate(s.ctx); err != nil {
			s.t.Fatalf("Migrate again (%d): %v", i+2, err)
		}
	}
	s.create("u1", "echo", `{"a":1}`)
	if err := s.s.Migrate(s.ctx); err != nil {
		s.t.Fatalf("Migrate with data: %v", err)
	}
	if n := len(s.list("u1", tasks.ListOptions{})); n != 1 {
		s.t.Fatalf("after Migrate: %d tasks, want 1", n)
	}
	// Migrating from two stores at once, as two processes starting
	// together would, must work for both.
	other := s.store()
	errs := make(chan error, 2)
	for _, st := range []tasks.Store{s.s, other} {
		go func() { errs <- st.Migrate(s.ctx) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			s.t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	if err := s.s.Ping(s.ctx); err != nil {
		s.t.Fatalf("Ping: %v", err)
	}
}

func testCreateGet(s *suite) {
	receipt := []byte{0, 1, 2, 0xff, 0xfe, 0}
	got, err := s.s.Create(s.ctx, tasks.Task{
		UserID: "alice", Kind: "sleep", Input: json.RawMessage(`{"seconds": 30}`), Receipt: receipt,
		// Run fields are the store's to set: Create must ignore them.
		Status: tasks.StatusSucceeded, Attempts: 7, Error: "x", LeaseOwner: "w", RefundOutcome: "refunded",
	})
	if err != nil {
		s.t.Fatalf("Create: %v", err)
	}
	if !tasks.ValidID(got.ID) {
		s.t.Errorf("Create: ID %q is not a valid task id", got.ID)
	}
	want := tasks.Task{
		ID: got.ID, UserID: "alice", Kind: "sleep", Input: json.RawMessage(`{"seconds":30}`),
		Status: tasks.StatusQueued, CreatedAt: s.now(), Receipt: receipt,
	}
	sameTask(s.t, "Create", got, want)
	sameTask(s.t, "Get", s.get("alice", got.ID), want)

	// A caller-chosen id is kept; an empty input is stored as null.
	id := tasks.NewID()
	s.clock.Advance(time.Second)
	if _, err := s.s.Cancel(s.ctx, "alice", got.ID); err != nil {
		s.t.Fatalf("Cancel: %v", err)
	}
	got2, err := s.s.Create(s.ctx, tasks.Task{ID: id, UserID: "alice", Kind: "echo"})
	if err != nil {
		s.t.Fatalf("Create with id: %v", err)
	}
	if got2.ID != id || string(got2.Input) != "null" {
		s.t.Errorf("Create with id and no input = %q, %s; want %q, null", got2.ID, got2.Input, id)
	}
	if g := s.get("alice", id); !jsonEqual(g.Input, json.RawMessage("null")) || g.Receipt != nil {
		s.t.Errorf("Get = input %s, receipt %v; want null, nil", g.Input, g.Receipt)
	}
	if _, err := s.s.Get(s.ctx, "alice", tasks.NewID()); !errors.Is(err, tasks.ErrNotFound) {
		s.t.Errorf("Get of an unknown id: %v, want ErrNotFound", err)
	}
}

func testCreateRejectsBadInput(s *suite) {
	for _, tc := range []struct {
		name string
		task tasks.Task
	}{
		{"no user", tasks.Task{Kind: "echo"}},
		{"no kind", tasks.Task{UserID: "u"}},
		{"malformed input", tasks.Task{UserID: "u", Kind: "echo", Input: json.RawMessage(`{"seconds":`)}},
		{"bad id", tasks.Task{ID: "nope", UserID: "u", Kind: "echo"}},
	} {
		if got, err := s.s.Create(s.ctx, tc.task); err == nil {
			s.t.Errorf("Create with %s = %+v, want an error", tc.name, got)
		}
	}
	if ts := s.list("u", tasks.ListOptions{}); len(ts) != 0 {
		s.t.Errorf("after rejected creates, the user has tasks %v", ids(ts))
	}
	if _, ok, err := s.s.Claim(s.ctx, "w", time.Minute); ok || err != nil {
		s.t.Errorf("after rejected creates, Claim = %v, %v; want nothing", ok, err)
	}
}

func testReceiptByteExact(s *suite) {
	for i, size := range []int{1, 255, 4096} {
		receipt := make([]byte, size)
		_, _ = rand.Read(receipt)
		user := fmt.Sprintf("u%d", i)
		created, err := s.s.Create(s.ctx, tasks.Task{UserID: user, Kind: "echo", Receipt: receipt})
		if err != nil {
			s.t.Fatalf("Create: %v", err)
		}
		receipt[0] ^= 0xff // the store must have kept its own copy
		receipt[0] ^= 0xff
		if got := s.get(user, created.ID).Receipt; !bytes.Equal(got, receipt) {
			s.t.Errorf("receipt of %d bytes read back as %d different bytes", size, len(got))
		}
		claimed := s.claim("w", time.Minute)
		if !bytes.Equal(claimed.Receipt, receipt) {
			s.t.Errorf("claimed task's receipt differs")
		}
		done, err := s.s.Finish(s.ctx, claimed.ID, "w", tasks.StatusFailed, nil, "boom")
		if err != nil {
			s.t.Fatalf("Finish: %v", err)
		}
		if !bytes.Equal(done.Receipt, receipt) {
			s.t.Errorf("finished task's receipt differs")
		}
	}
}

func testUsersIsolated(s *suite) {
	a := s.create("alice", "echo", `1`)
	for _, op := range []struct {
		name string
		err  func() error
	}{
		{"Get", func() error { _, err := s.s.Get(s.ctx, "bob", a.ID); return err }},
		{"Cancel", func() error { _, err := s.s.Cancel(s.ctx, "bob", a.ID); return err }},
		{"List cursor", func() error { _, err := s.s.List(s.ctx, "bob", tasks.ListOptions{Before: a.ID}); return err }},
	} {
		if err := op.err(); !errors.Is(err, tasks.ErrNotFound) {
			s.t.Errorf("%s of alice's task by bob: %v, want ErrNotFound", op.name, err)
		}
	}
	if ts := s.list("bob", tasks.ListOptions{}); len(ts) != 0 {
		s.t.Errorf("bob lists %v, want nothing", ids(ts))
	}
	if got := s.get("alice", a.ID); got.Status != tasks.StatusQueued {
		s.t.Errorf("after bob's cancel, alice's task is %s, want queued", got.Status)
	}
	// bob has his own slot.
	s.create("bob", "echo", `2`)
}

func testOneActiveTask(s *suite) {
	first := s.create("alice", "sleep", `{"seconds":1}`)
	for _, state := range []string{"queued", "running"} {
		if state == "running" {
			s.claim("w", time.Minute)
		}
		_, err := s.s.Create(s.ctx, tasks.Task{UserID: "alice", Kind: "echo"})
		var active *tasks.ActiveTaskError
		if !errors.As(err, &active) || !errors.Is(err, tasks.ErrActiveTask) {
			s.t.Fatalf("second Create while the first is %s: %v, want *ActiveTaskError", state, err)
		}
		if active.ActiveID != first.ID {
			s.t.Errorf("ActiveTaskError names %s, want %s", active.ActiveID, first.ID)
		}
	}
	if n := len(s.list("alice", tasks.ListOptions{})); n != 1 {
		s.t.Errorf("alice has %d tasks, want 1", n)
	}
}

// createConcurrently runs n Creates for one user across stores and checks
// that exactly one succeeds and the others name it.
func (s *suite) createConcurrently(stores []tasks.Store, n int) {
	type result struct {
		t   tasks.Task
		err error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for i := range n {
		st := stores[i%len(stores)]
		wg.Go(func() {
			t, err := st.Create(s.ctx, tasks.Task{UserID: "alice", Kind: "echo", Input: json.RawMessage(fmt.Sprint(i))})
			results <- result{t, err}
		})
	}
	wg.Wait()
	close(results)
	var created []tasks.Task
	var activeIDs []string
	for r := range results {
		var active *tasks.ActiveTaskError
		switch {
		case r.err == nil:
			created = append(created, r.t)
		case errors.As(r.err, &active):
			activeIDs = append(activeIDs, active.ActiveID)
		default:
			s.t.Errorf("concurrent Create: %v", r.err)
		}
	}
	if len(created) != 1 {
		s.t.Fatalf("%d concurrent Creates for one user created %d tasks, want 1", n, len(created))
	}
	for _, id := range activeIDs {
		if id != created[0].ID {
			s.t.Errorf("ActiveTaskError names %s, want the created %s", id, created[0].ID)
		}
	}
	if len(activeIDs) != n-1 {
		s.t.Errorf("%d ActiveTaskErrors, want %d", len(activeIDs), n-1)
	}
	if ts := s.list("alice", tasks.ListOptions{}); len(ts) != 1 {
		s.t.Errorf("alice has tasks %v, want one", ids(ts))
	}
}

func testConcurrentCreates(s *suite) {
	s.createConcurrently([]tasks.Store{s.s}, s.opts.Concurrency)
}

func testConcurrentCreatesTwoStores(s *suite) {
	s.createConcurrently([]tasks.Store{s.s, s.store()}, s.opts.Concurrency)
}

func testNewTaskAfterEnd(s *suite) {
	// Ended by cancel, by success, by failure and by getting stuck: each
	// frees the slot.
	t1 := s.create("alice", "echo", `1`)
	if _, err := s.s.Cancel(s.ctx, "alice", t1.ID); err != nil {
		s.t.Fatalf("Cancel: %v", err)
	}
	for _, st := range []tasks.Status{tasks.StatusSucceeded, tasks.StatusFailed} {
		s.create("alice", "echo", `2`)
		c := s.claim("w", time.Minute)
		if _, err := s.s.Finish(s.ctx, c.ID, "w", st, json.RawMessage(`{}`), ""); err != nil {
			s.t.Fatalf("Finish %s: %v", st, err)
		}
	}
	s.create("alice", "echo", `3`)
	s.claim("w", time.Minute)
	s.clock.Advance(2 * time.Minute)
	if _, err := s.s.Reap(s.ctx, 1); err != nil {
		s.t.Fatalf("Reap: %v", err)
	}
	last := s.create("alice", "echo", `4`)
	if got := s.list("alice", tasks.ListOptions{}); len(got) != 5 || got[0].ID != last.ID {
		s.t.Errorf("alice lists %v, want 5 tasks, %s first", ids(got), last.ID)
	}
}

func testCancel(s *suite) {
	q := s.create("alice", "sleep", `{"seconds":5}`)
	s.clock.Advance(time.Second)
	got, err := s.s.Cancel(s.ctx, "alice", q.ID)
	if err != nil {
		s.t.Fatalf("Cancel of a queued task: %v", err)
	}
	want := q
	want.Status, want.FinishedAt = tasks.StatusCanceled, ptr(s.now())
	sameTask(s.t, "Cancel of a queued task", got, want)
	sameTask(s.t, "Get after Cancel", s.get("alice", q.ID), want)

	again, err := s.s.Cancel(s.ctx, "alice", q.ID)
	if !errors.Is(err, tasks.ErrNotActive) {
		s.t.Errorf("second Cancel: %v, want ErrNotActive", err)
	}
	sameTask(s.t, "second Cancel returns the task unchanged", again, want)

	r := s.create("alice", "sleep", `{"seconds":5}`)
	s.claim("w", time.Minute)
	got, err = s.s.Cancel(s.ctx, "alice", r.ID)
	if err != nil {
		s.t.Fatalf("Cancel of a running task: %v", err)
	}
	if got.Status != tasks.StatusCanceled || got.LeaseOwner != "" || got.LeaseExpires != nil || got.Attempts != 1 || got.StartedAt == nil {
		s.t.Errorf("Cancel of a running task = %+v; want canceled, lease cleared, 1 attempt, started", got)
	}
	if err := s.s.Heartbeat(s.ctx, r.ID, "w", time.Minute); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Heartbeat after Cancel: %v, want ErrLeaseLost", err)
	}
	if _, err := s.s.Finish(s.ctx, r.ID, "w", tasks.StatusSucceeded, json.RawMessage(`1`), ""); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Finish after Cancel: %v, want ErrLeaseLost", err)
	}
	if g := s.get("alice", r.ID); g.Status != tasks.StatusCanceled {
		s.t.Errorf("after a late Finish the task is %s, want canceled", g.Status)
	}
	if _, err := s.s.Cancel(s.ctx, "alice", tasks.NewID()); !errors.Is(err, tasks.ErrNotFound) {
		s.t.Errorf("Cancel of an unknown task: %v, want ErrNotFound", err)
	}
}

func testList(s *suite) {
	var all []tasks.Task // oldest first
	for i := range 7 {
		t := s.create("alice", "echo", fmt.Sprint(i))
		if i%2 == 0 {
			if _, err := s.s.Cancel(s.ctx, "alice", t.ID); err != nil {
				s.t.Fatal(err)
			}
		} else {
			c := s.claim("w", time.Minute)
			if _, err := s.s.Finish(s.ctx, c.ID, "w", tasks.StatusSucceeded, json.RawMessage(`"ok"`), ""); err != nil {
				s.t.Fatal(err)
			}
		}
		all = append(all, t)
		// Same clock reading for some tasks: order must not rely on time.
		if i%3 == 0 {
			s.clock.Advance(time.Millisecond)
		}
	}
	s.create("bob", "echo", `0`)
	newest := func(ts []tasks.Task) []string {
		out := ids(ts)
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
		return out
	}(all)

	if got := ids(s.list("alice", tasks.ListOptions{})); !reflect.DeepEqual(got, newest) {
		s.t.Errorf("List = %v, want newest first %v", got, newest)
	}
	var paged []string
	before := ""
	for range 10 {
		page := s.list("alice", tasks.ListOptions{Limit: 3, Before: before})
		if len(page) > 3 {
			s.t.Fatalf("page of %d tasks, limit 3", len(page))
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, ids(page)...)
		before = page[len(page)-1].ID
	}
	if !reflect.DeepEqual(paged, newest) {
		s.t.Errorf("pages = %v, want %v", paged, newest)
	}
	canceled := s.list("alice", tasks.ListOptions{Status: tasks.StatusCanceled})
	if len(canceled) != 4 {
		s.t.Errorf("canceled tasks %v, want 4", ids(canceled))
	}
	for _, t := range canceled {
		if t.Status != tasks.StatusCanceled {
			s.t.Errorf("Status filter returned a %s task", t.Status)
		}
	}
	if got := s.list("alice", tasks.ListOptions{Status: tasks.StatusSucceeded, Limit: 1, Before: newest[1]}); len(got) != 1 || got[0].ID != newest[3] {
		s.t.Errorf("succeeded before %s, limit 1 = %v, want [%s]", newest[1], ids(got), newest[3])
	}
	if _, err := s.s.List(s.ctx, "alice", tasks.ListOptions{Status: "done"}); err == nil {
		s.t.Errorf("List with an unknown status: no error")
	}
	if _, err := s.s.List(s.ctx, "alice", tasks.ListOptions{Before: tasks.NewID()}); !errors.Is(err, tasks.ErrNotFound) {
		s.t.Errorf("List with an unknown cursor: %v, want ErrNotFound", err)
	}
	if got := s.list("carol", tasks.ListOptions{}); got == nil || len(got) != 0 {
		s.t.Errorf("List of a user without tasks = %#v, want an empty slice", got)
	}
}

func testClaimOldestFirst(s *suite) {
	var want []string
	for i := range 5 {
		want = append(want, s.create(fmt.Sprintf("u%d", i), "echo", fmt.Sprint(i)).ID)
	}
	s.clock.Advance(time.Second)
	lease := 45 * time.Second
	for i, id := range want {
		c := s.claim("w1", lease)
		if c.ID != id {
			s.t.Fatalf("claim %d got %s, want the oldest queued %s", i, c.ID, id)
		}
		now := s.now()
		if c.Status != tasks.StatusRunning || c.Attempts != 1 || c.LeaseOwner != "w1" ||
			c.LeaseExpires == nil || !c.LeaseExpires.Equal(now.Add(lease)) || c.StartedAt == nil || !c.StartedAt.Equal(now) {
			s.t.Errorf("claimed task = %+v; want running, attempt 1, leased by w1 until %v, started %v", c, now.Add(lease), now)
		}
		sameTask(s.t, "Get of a claimed task", s.get(fmt.Sprintf("u%d", i), id), c)
	}
	if got, ok, err := s.s.Claim(s.ctx, "w1", lease); ok || err != nil {
		s.t.Errorf("Claim with an empty queue = %v, %v, %v; want nothing", got.ID, ok, err)
	}
	for _, bad := range []struct {
		owner string
		lease time.Duration
	}{{"", time.Minute}, {"w", 0}} {
		if _, _, err := s.s.Claim(s.ctx, bad.owner, bad.lease); err == nil {
			s.t.Errorf("Claim(%q, %v): no error", bad.owner, bad.lease)
		}
	}
}

func testConcurrentClaims(s *suite) {
	const n, claimers = 30, 6
	for i := range n {
		s.create(fmt.Sprintf("u%d", i), "echo", fmt.Sprint(i))
	}
	stores := []tasks.Store{s.s, s.store()}
	var mu sync.Mutex
	claimedBy := map[string][]string{}
	var wg sync.WaitGroup
	for c := range claimers {
		owner := fmt.Sprintf("w%d", c)
		st := stores[c%len(stores)]
		wg.Go(func() {
			for {
				t, ok, err := st.Claim(s.ctx, owner, time.Minute)
				if err != nil {
					s.t.Errorf("Claim: %v", err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				claimedBy[t.ID] = append(claimedBy[t.ID], owner)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimedBy) != n {
		s.t.Errorf("%d tasks claimed, want %d", len(claimedBy), n)
	}
	for id, owners := range claimedBy {
		if len(owners) != 1 {
			s.t.Errorf("task %s claimed by %v, want exactly one", id, owners)
		}
	}
}

func testHeartbeat(s *suite) {
	t := s.create("alice", "echo", `1`)
	s.claim("w", time.Minute)
	s.clock.Advance(50 * time.Second)
	if err := s.s.Heartbeat(s.ctx, t.ID, "w", 2*time.Minute); err != nil {
		s.t.Fatalf("Heartbeat: %v", err)
	}
	if got := s.get("alice", t.ID); got.LeaseExpires == nil || !got.LeaseExpires.Equal(s.now().Add(2*time.Minute)) {
		s.t.Errorf("after Heartbeat the lease ends %v, want %v", got.LeaseExpires, s.now().Add(2*time.Minute))
	}
	s.clock.Advance(90 * time.Second) // past the first lease, within the renewed one
	if reaped, err := s.s.Reap(s.ctx, 1); err != nil || len(reaped) != 0 {
		s.t.Errorf("Reap of a renewed lease = %v, %v; want nothing", ids(reaped), err)
	}
	if err := s.s.Heartbeat(s.ctx, t.ID, "other", time.Minute); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Heartbeat by another owner: %v, want ErrLeaseLost", err)
	}
	if err := s.s.Heartbeat(s.ctx, tasks.NewID(), "w", time.Minute); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Heartbeat of an unknown task: %v, want ErrLeaseLost", err)
	}
	if err := s.s.Heartbeat(s.ctx, t.ID, "w", -time.Second); err == nil {
		s.t.Errorf("Heartbeat with a negative lease: no error")
	}
}

func testFinish(s *suite) {
	t := s.create("alice", "echo", `{"x":[1,2]}`)
	c := s.claim("w", time.Minute)
	before := s.get("alice", t.ID)
	for _, bad := range []struct {
		name   string
		owner  string
		st     tasks.Status
		output string
	}{
		{"queued status", "w", tasks.StatusQueued, ""},
		{"canceled status", "w", tasks.StatusCanceled, ""},
		{"stuck status", "w", tasks.StatusStuck, ""},
		{"malformed output", "w", tasks.StatusSucceeded, `{"x":`},
		{"empty owner", "", tasks.StatusSucceeded, `1`},
	} {
		if _, err := s.s.Finish(s.ctx, c.ID, bad.owner, bad.st, json.RawMessage(bad.output), ""); err == nil {
			s.t.Errorf("Finish with %s: no error", bad.name)
		}
	}
	if _, err := s.s.Finish(s.ctx, c.ID, "other", tasks.StatusSucceeded, nil, ""); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Finish by a non-owner: %v, want ErrLeaseLost", err)
	}
	sameTask(s.t, "after rejected Finishes", s.get("alice", t.ID), before)

	s.clock.Advance(3 * time.Second)
	done, err := s.s.Finish(s.ctx, c.ID, "w", tasks.StatusSucceeded, json.RawMessage(`{"x": [1, 2]}`), "")
	if err != nil {
		s.t.Fatalf("Finish: %v", err)
	}
	want := before
	want.Status, want.Output, want.FinishedAt, want.LeaseOwner, want.LeaseExpires =
		tasks.StatusSucceeded, json.RawMessage(`{"x":[1,2]}`), ptr(s.now()), "", nil
	sameTask(s.t, "Finish", done, want)
	sameTask(s.t, "Get after Finish", s.get("alice", t.ID), want)
	if _, err := s.s.Finish(s.ctx, c.ID, "w", tasks.StatusFailed, nil, "again"); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("second Finish: %v, want ErrLeaseLost", err)
	}
	if _, err := s.s.Finish(s.ctx, tasks.NewID(), "w", tasks.StatusFailed, nil, ""); !errors.Is(err, tasks.ErrNotFound) {
		s.t.Errorf("Finish of an unknown task: %v, want ErrNotFound", err)
	}

	s.create("alice", "sleep", `{"seconds":1,"fail":true}`)
	f := s.claim("w", time.Minute)
	failed, err := s.s.Finish(s.ctx, f.ID, "w", tasks.StatusFailed, nil, "it broke")
	if err != nil {
		s.t.Fatalf("Finish failed: %v", err)
	}
	if failed.Status != tasks.StatusFailed || failed.Error != "it broke" || failed.Output != nil {
		s.t.Errorf("failed task = %+v; want failed, error \"it broke\", no output", failed)
	}
}

func testRelease(s *suite) {
	t := s.create("alice", "echo", `1`)
	c := s.claim("w", time.Minute)
	if err := s.s.Release(s.ctx, c.ID, "other"); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Release by a non-owner: %v, want ErrLeaseLost", err)
	}
	if err := s.s.Release(s.ctx, c.ID, "w"); err != nil {
		s.t.Fatalf("Release: %v", err)
	}
	got := s.get("alice", t.ID)
	if got.Status != tasks.StatusQueued || got.Attempts != 0 || got.LeaseOwner != "" || got.LeaseExpires != nil {
		s.t.Errorf("released task = %+v; want queued, 0 attempts, no lease", got)
	}
	if err := s.s.Heartbeat(s.ctx, c.ID, "w", time.Minute); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Heartbeat after Release: %v, want ErrLeaseLost", err)
	}
	if again := s.claim("w2", time.Minute); again.ID != t.ID || again.Attempts != 1 {
		s.t.Errorf("claim after Release = %s attempt %d, want %s attempt 1", again.ID, again.Attempts, t.ID)
	}
}

func testReap(s *suite) {
	t := s.create("alice", "sleep", `{"seconds":60}`)
	other := s.create("bob", "echo", `1`)
	s.claim("w1", time.Minute)
	s.claim("w1", 10*time.Minute) // bob's, with a longer lease
	s.clock.Advance(30 * time.Second)
	if reaped, err := s.s.Reap(s.ctx, 2); err != nil || len(reaped) != 0 {
		s.t.Fatalf("Reap before the lease ends = %v, %v; want nothing", ids(reaped), err)
	}
	s.clock.Advance(31 * time.Second)
	reaped, err := s.s.Reap(s.ctx, 2)
	if err != nil {
		s.t.Fatalf("Reap: %v", err)
	}
	if len(reaped) != 1 || reaped[0].ID != t.ID || reaped[0].Status != tasks.StatusQueued || reaped[0].Attempts != 1 ||
		reaped[0].LeaseOwner != "" || reaped[0].LeaseExpires != nil {
		s.t.Fatalf("Reap = %+v; want alice's task queued again after 1 attempt, no lease", reaped)
	}
	if err := s.s.Heartbeat(s.ctx, t.ID, "w1", time.Minute); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Heartbeat after the lease was reaped: %v, want ErrLeaseLost", err)
	}
	if _, err := s.s.Create(s.ctx, tasks.Task{UserID: "alice", Kind: "echo"}); !errors.Is(err, tasks.ErrActiveTask) {
		s.t.Errorf("Create while the requeued task waits: %v, want ErrActiveTask", err)
	}

	c := s.claim("w2", time.Minute)
	if c.ID != t.ID || c.Attempts != 2 {
		s.t.Fatalf("claim after requeue = %s attempt %d; want %s attempt 2", c.ID, c.Attempts, t.ID)
	}
	s.clock.Advance(2 * time.Minute)
	reaped, err = s.s.Reap(s.ctx, 2)
	if err != nil {
		s.t.Fatalf("Reap: %v", err)
	}
	if len(reaped) != 1 || reaped[0].Status != tasks.StatusStuck || reaped[0].Error == "" || reaped[0].FinishedAt == nil ||
		!reaped[0].FinishedAt.Equal(s.now()) {
		s.t.Fatalf("second Reap = %+v; want alice's task stuck with an error, finished now", reaped)
	}
	sameTask(s.t, "Get of the stuck task", s.get("alice", t.ID), reaped[0])
	if _, err := s.s.Finish(s.ctx, t.ID, "w2", tasks.StatusSucceeded, json.RawMessage(`1`), ""); !errors.Is(err, tasks.ErrLeaseLost) {
		s.t.Errorf("Finish of a stuck task: %v, want ErrLeaseLost", err)
	}
	s.create("alice", "echo", `"slot free again"`)
	if got := s.get("bob", other.ID); got.Status != tasks.StatusRunning {
		s.t.Errorf("bob's task with an unexpired lease is %s, want running", got.Status)
	}
	if reaped, err := s.s.Reap(s.ctx, 2); err != nil || len(reaped) != 0 {
		s.t.Errorf("Reap again = %v, %v; want nothing", ids(reaped), err)
	}
}

func testRefundOutcome(s *suite) {
	t := s.create("alice", "echo", `1`)
	if err := s.s.SetRefundOutcome(s.ctx, t.ID, "refunded"); err != nil {
		s.t.Fatalf("SetRefundOutcome: %v", err)
	}
	if got := s.get("alice", t.ID).RefundOutcome; got != "refunded" {
		s.t.Errorf("RefundOutcome = %q, want refunded", got)
	}
	if err := s.s.SetRefundOutcome(s.ctx, tasks.NewID(), "refunded"); !errors.Is(err, tasks.ErrNotFound) {
		s.t.Errorf("SetRefundOutcome of an unknown task: %v, want ErrNotFound", err)
	}
}

func testAPIKeys(s *suite) {
	h1 := bytes.Repeat([]byte{0xab}, 32)
	h2 := append(bytes.Repeat([]byte{0}, 31), 1)
	if err := s.s.CreateAPIKey(s.ctx, "alice", h1); err != nil {
		s.t.Fatalf("CreateAPIKey: %v", err)
	}
	if err := s.s.CreateAPIKey(s.ctx, "alice", h2); err != nil {
		s.t.Fatalf("CreateAPIKey of a second key: %v", err)
	}
	for _, h := range [][]byte{h1, h2} {
		if user, err := s.s.UserByAPIKey(s.ctx, h); err != nil || user != "alice" {
			s.t.Errorf("UserByAPIKey = %q, %v; want alice", user, err)
		}
	}
	if err := s.s.CreateAPIKey(s.ctx, "bob", h1); err == nil {
		s.t.Errorf("CreateAPIKey with an existing hash: no error")
	}
	if user, _ := s.s.UserByAPIKey(s.ctx, h1); user != "alice" {
		s.t.Errorf("after a rejected duplicate, the key belongs to %q, want alice", user)
	}
	if _, err := s.s.UserByAPIKey(s.ctx, h1[:31]); !errors.Is(err, tasks.ErrNotFound) {
		s.t.Errorf("UserByAPIKey of an unknown hash: %v, want ErrNotFound", err)
	}
	if err := s.s.CreateAPIKey(s.ctx, "", h2); err == nil {
		s.t.Errorf("CreateAPIKey without a user: no error")
	}
	if err := s.s.CreateAPIKey(s.ctx, "carol", nil); err == nil {
		s.t.Errorf("CreateAPIKey without a hash: no error")
	}
}

// endTask creates a task of user, with a receipt when receipt is true,
// claims it and finishes it with st.
func (s *suite) endTask(user string, receipt bool, st tasks.Status) tasks.Task {
	s.t.Helper()
	t := tasks.Task{UserID: user, Kind: "echo"}
	if receipt {
		t.Receipt = []byte("receipt of " + user)
	}
	if _, err := s.s.Create(s.ctx, t); err != nil {
		s.t.Fatalf("Create: %v", err)
	}
	c := s.claim("w", time.Minute)
	done, err := s.s.Finish(s.ctx, c.ID, "w", st, nil, "it broke")
	if err != nil {
		s.t.Fatalf("Finish: %v", err)
	}
	return done
}

func (s *suite) counts(want tasks.RefundCounts) {
	s.t.Helper()
	got, err := s.s.CountRefunds(s.ctx)
	if err != nil || got != want {
		s.t.Errorf("CountRefunds = %+v, %v; want %+v", got, err, want)
	}
}

func testRefundQueue(s *suite) {
	s.counts(tasks.RefundCounts{})
	alice := s.endTask("alice", true, tasks.StatusFailed)
	if alice.RefundState != tasks.RefundPending || alice.RefundReason != tasks.RefundWorkerFailure ||
		alice.RefundDue == nil || !alice.RefundDue.Equal(s.now()) || alice.RefundAttempts != 0 {
		s.t.Errorf("failed task with a receipt = %+v; want a pending worker_failure refund due now", alice)
	}
	for _, tc := range []struct {
		user    string
		receipt bool
		st      tasks.Status
	}{{"bob", false, tasks.StatusFailed}, {"carol", true, tasks.StatusSucceeded}} {
		if got := s.endTask(tc.user, tc.receipt, tc.st); got.RefundState != "" || got.RefundReason != "" || got.RefundDue != nil {
			s.t.Errorf("%s task (receipt %v) = %+v; want no refund queued", tc.st, tc.receipt, got)
		}
	}
	s.clock.Advance(time.Second)
	if _, err := s.s.Create(s.ctx, tasks.Task{UserID: "dave", Kind: "echo", Receipt: []byte{1}}); err != nil {
		s.t.Fatal(err)
	}
	s.claim("w", time.Minute)
	s.clock.Advance(2 * time.Minute)
	reaped, err := s.s.Reap(s.ctx, 1)
	if err != nil || len(reaped) != 1 {
		s.t.Fatalf("Reap = %v, %v", ids(reaped), err)
	}
	dave := reaped[0]
	if dave.RefundState != tasks.RefundPending || dave.RefundReason != tasks.RefundStuck || dave.RefundDue == nil || !dave.RefundDue.Equal(s.now()) {
		s.t.Errorf("stuck task with a receipt = %+v; want a pending stuck refund due now", dave)
	}
	s.counts(tasks.RefundCounts{Pending: 2})

	lease := time.Minute
	first, ok, err := s.s.ClaimRefund(s.ctx, lease)
	if err != nil || !ok || first.ID != alice.ID || first.RefundAttempts != 1 || !first.RefundDue.Equal(s.now().Add(lease)) {
		s.t.Fatalf("ClaimRefund = %+v, %v, %v; want alice's (due first), attempt 1, due in a minute", first, ok, err)
	}
	second, ok, err := s.s.ClaimRefund(s.ctx, lease)
	if err != nil || !ok || second.ID != dave.ID {
		s.t.Fatalf("second ClaimRefund = %v, %v, %v; want dave's", second.ID, ok, err)
	}
	if got, ok, err := s.s.ClaimRefund(s.ctx, lease); ok || err != nil {
		s.t.Fatalf("ClaimRefund with every refund claimed = %v, %v, %v; want nothing", got.ID, ok, err)
	}
	if err := s.s.RetryRefund(s.ctx, alice.ID, 10*time.Second, "limits store down"); err != nil {
		s.t.Fatalf("RetryRefund: %v", err)
	}
	if got := s.get("alice", alice.ID); got.RefundState != tasks.RefundPending || got.RefundError != "limits store down" ||
		!got.RefundDue.Equal(s.now().Add(10*time.Second)) {
		s.t.Errorf("after RetryRefund = %+v; want pending, due in 10s, with the error", got)
	}
	if got, ok, _ := s.s.ClaimRefund(s.ctx, lease); ok {
		s.t.Fatalf("ClaimRefund before the retry is due = %v", got.ID)
	}
	s.clock.Advance(11 * time.Second)
	again, ok, err := s.s.ClaimRefund(s.ctx, lease)
	if err != nil || !ok || again.ID != alice.ID || again.RefundAttempts != 2 {
		s.t.Fatalf("ClaimRefund after the retry delay = %v attempt %d, %v, %v; want alice's, attempt 2", again.ID, again.RefundAttempts, ok, err)
	}
	if err := s.s.FinishRefund(s.ctx, alice.ID, "refunded"); err != nil {
		s.t.Fatalf("FinishRefund: %v", err)
	}
	if got := s.get("alice", alice.ID); got.RefundState != tasks.RefundDone || got.RefundOutcome != "refunded" || got.RefundDue != nil {
		s.t.Errorf("after FinishRefund = %+v; want done, outcome refunded", got)
	}
	if err := s.s.FinishRefund(s.ctx, alice.ID, "refunded"); !errors.Is(err, tasks.ErrNoPendingRefund) {
		s.t.Errorf("second FinishRefund: %v, want ErrNoPendingRefund", err)
	}
	if err := s.s.AbandonRefund(s.ctx, dave.ID, "gave up after 2 tries"); err != nil {
		s.t.Fatalf("AbandonRefund: %v", err)
	}
	if got := s.get("dave", dave.ID); got.RefundState != tasks.RefundAbandoned || got.RefundError != "gave up after 2 tries" {
		s.t.Errorf("after AbandonRefund = %+v; want abandoned with the error", got)
	}
	for name, err := range map[string]error{
		"RetryRefund of an abandoned refund": s.s.RetryRefund(s.ctx, dave.ID, time.Second, "x"),
		"AbandonRefund of a done refund":     s.s.AbandonRefund(s.ctx, alice.ID, "x"),
		"FinishRefund of a task without one": s.s.FinishRefund(s.ctx, tasks.NewID(), "x"),
	} {
		if !errors.Is(err, tasks.ErrNoPendingRefund) {
			s.t.Errorf("%s: %v, want ErrNoPendingRefund", name, err)
		}
	}
	s.counts(tasks.RefundCounts{Done: 1, Abandoned: 1})

	// A refund made another way (SetRefundOutcome) ends the record too.
	erin := s.endTask("erin", true, tasks.StatusFailed)
	if err := s.s.SetRefundOutcome(s.ctx, erin.ID, "refunded"); err != nil {
		s.t.Fatal(err)
	}
	if got := s.get("erin", erin.ID); got.RefundState != tasks.RefundDone {
		s.t.Errorf("after SetRefundOutcome the refund is %q, want done", got.RefundState)
	}
	if got, ok, _ := s.s.ClaimRefund(s.ctx, lease); ok {
		s.t.Errorf("ClaimRefund after SetRefundOutcome = %v, want nothing", got.ID)
	}
}

func testConcurrentRefundClaims(s *suite) {
	const n, claimers = 12, 4
	for i := range n {
		s.endTask(fmt.Sprintf("u%d", i), true, tasks.StatusFailed)
	}
	stores := []tasks.Store{s.s, s.store()}
	var mu sync.Mutex
	claims := map[string]int{}
	var wg sync.WaitGroup
	for c := range claimers {
		st := stores[c%len(stores)]
		wg.Go(func() {
			for {
				t, ok, err := st.ClaimRefund(s.ctx, time.Minute)
				if err != nil {
					s.t.Errorf("ClaimRefund: %v", err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				claims[t.ID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claims) != n {
		s.t.Errorf("%d refunds claimed, want %d", len(claims), n)
	}
	for id, c := range claims {
		if c != 1 {
			s.t.Errorf("refund of %s claimed %d times", id, c)
		}
	}
}
