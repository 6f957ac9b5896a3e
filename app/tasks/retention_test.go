package tasks_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/app/tasks/storetest"
)

// cancelTasks creates and cancels a task for each of n users named
// prefix0, prefix1, ….
func cancelTasks(t *testing.T, s tasks.Store, prefix string, n int) {
	t.Helper()
	for i := range n {
		user := fmt.Sprintf("%s%d", prefix, i)
		task := create(t, s, user, "echo", `1`)
		if _, err := s.Cancel(t.Context(), user, task.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPurgerLoop runs the purge loop on a fake clock: a pass deletes in
// batches with a pause after each full one, then waits an interval; tasks
// younger than the retention age stay until they are old enough.
func TestPurgerLoop(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := openStore(t, sqlitestore.WithClock(clock.Now))
	cancelTasks(t, s, "old", 5)
	clock.Advance(2 * time.Hour)
	cancelTasks(t, s, "new", 1)

	batches := make(chan int, 10)
	const pause, interval = time.Second, 10 * time.Minute
	p, err := tasks.NewPurger(s, time.Hour, nil,
		tasks.WithPurgeBatch(2, pause), tasks.WithPurgeInterval(interval), tasks.WithPurgeClock(clock),
		tasks.WithPurgeHook(func(d map[tasks.Status]int) { batches <- d[tasks.StatusCanceled] }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()

	next := func(want int) {
		t.Helper()
		select {
		case n := <-batches:
			if n != want {
				t.Fatalf("a batch deleted %d tasks, want %d", n, want)
			}
		case <-ctx.Done():
			t.Fatalf("no batch deleted %d tasks", want)
		}
	}
	// The first pass starts at once: full batches of 2, each followed by
	// a pause, then the last one.
	next(2)
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-batches:
		t.Fatalf("a batch of %d ran before the pause ended", n)
	default:
	}
	clock.Advance(pause)
	next(2)
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(pause)
	next(1)
	// Now the pass waits an interval. The new task is not an hour old at
	// the next pass, but is at the one after.
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(interval)
	if err := clock.WaitTimers(ctx, 1); err != nil { // the pass ended
		t.Fatal(err)
	}
	select {
	case n := <-batches:
		t.Fatalf("a pass deleted %d tasks younger than the retention age", n)
	default:
	}
	if ts, err := s.List(ctx, "new0", tasks.ListOptions{}); err != nil || len(ts) != 1 {
		t.Fatalf("the new task: %d, %v; want it kept", len(ts), err)
	}
	clock.Advance(time.Hour)
	next(1)
	if ts, err := s.List(ctx, "new0", tasks.ListOptions{}); err != nil || len(ts) != 0 {
		t.Fatalf("the task an hour old: %d, %v; want it deleted", len(ts), err)
	}

	if err := p.Run(ctx); err == nil {
		t.Errorf("a second Run of a running Purger: no error")
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestPurgeKeepsPendingRefunds(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := openStore(t, sqlitestore.WithClock(clock.Now))
	if _, err := s.Create(t.Context(), tasks.Task{UserID: "alice", Kind: "echo", Receipt: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	c, _, err := s.Claim(t.Context(), "w", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(t.Context(), c.ID, "w", tasks.StatusFailed, nil, "boom"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(48 * time.Hour)
	p, err := tasks.NewPurger(s, time.Hour, nil, tasks.WithPurgeClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Purge(t.Context()); n != 0 || err != nil {
		t.Fatalf("Purge with a pending refund = %d, %v; want it kept", n, err)
	}
	if err := s.AbandonRefund(t.Context(), c.ID, "gave up"); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Purge(t.Context()); n != 1 || err != nil {
		t.Fatalf("Purge after the refund was abandoned = %d, %v; want 1", n, err)
	}
}

func TestNewPurgerRefusesNoAge(t *testing.T) {
	for _, age := range []time.Duration{0, -time.Hour} {
		if _, err := tasks.NewPurger(nil, age, nil); err == nil {
			t.Errorf("NewPurger(age %v): no error", age)
		}
	}
}
