package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
)

// failedWithReceipt creates and fails a task of user carrying a receipt,
// which queues its refund.
func failedWithReceipt(t *testing.T, s tasks.Store, user string) tasks.Task {
	t.Helper()
	if _, err := s.Create(t.Context(), tasks.Task{UserID: user, Kind: "echo", Receipt: []byte("r-" + user)}); err != nil {
		t.Fatal(err)
	}
	c, ok, err := s.Claim(t.Context(), "w", time.Minute)
	if !ok || err != nil {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	done, err := s.Finish(t.Context(), c.ID, "w", tasks.StatusFailed, nil, "boom")
	if err != nil || done.RefundState != tasks.RefundPending {
		t.Fatalf("Finish = %+v, %v; want a pending refund", done, err)
	}
	return done
}

type attempt struct {
	t     tasks.Task
	state tasks.RefundState
	err   error
}

func runRefunder(t *testing.T, r *tasks.Refunder) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func nextAttempt(t *testing.T, ch <-chan attempt) attempt {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(wait):
		t.Fatal("no refund attempt")
	}
	return attempt{}
}

func TestRefunderRetriesThenSucceeds(t *testing.T) {
	s := openStore(t)
	task := failedWithReceipt(t, s, "alice")
	calls := 0
	refund := func(_ context.Context, got tasks.Task) (string, error) {
		calls++
		if string(got.Receipt) != "r-alice" || got.RefundReason != tasks.RefundWorkerFailure {
			return "", fmt.Errorf("refund of %+v: %w", got, tasks.ErrPermanentRefund)
		}
		if calls < 3 {
			return "", fmt.Errorf("limits store down (%d)", calls)
		}
		return "refunded", nil
	}
	attempts := make(chan attempt, 10)
	r := tasks.NewRefunder(s, refund, nil, tasks.WithRefundPoll(10*time.Millisecond),
		tasks.WithRefundRetry(time.Millisecond, 2*time.Millisecond, 5),
		tasks.WithRefundHook(func(t tasks.Task, st tasks.RefundState, err error) { attempts <- attempt{t, st, err} }))
	runRefunder(t, r)
	for i, want := range []tasks.RefundState{tasks.RefundPending, tasks.RefundPending, tasks.RefundDone} {
		a := nextAttempt(t, attempts)
		if a.state != want || a.t.RefundAttempts != i+1 || (want == tasks.RefundDone) != (a.err == nil) {
			t.Fatalf("attempt %d: %s after attempt %d, err %v; want %s", i+1, a.state, a.t.RefundAttempts, a.err, want)
		}
	}
	got, err := s.Get(t.Context(), "alice", task.ID)
	if err != nil || got.RefundState != tasks.RefundDone || got.RefundOutcome != "refunded" || got.RefundAttempts != 3 {
		t.Errorf("refunded task = %+v, %v; want done, outcome refunded, 3 attempts", got, err)
	}
}

func TestRefunderAbandons(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		attempts int
	}{
		{"after the last attempt", errors.New("limits store down"), 3},
		{"at once on a permanent error", fmt.Errorf("bad receipt: %w", tasks.ErrPermanentRefund), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			task := failedWithReceipt(t, s, "alice")
			attempts := make(chan attempt, 10)
			r := tasks.NewRefunder(s, func(context.Context, tasks.Task) (string, error) { return "", tc.err }, nil,
				tasks.WithRefundPoll(10*time.Millisecond), tasks.WithRefundRetry(time.Millisecond, time.Millisecond, 3),
				tasks.WithRefundHook(func(t tasks.Task, st tasks.RefundState, err error) { attempts <- attempt{t, st, err} }))
			runRefunder(t, r)
			var last attempt
			for range tc.attempts {
				last = nextAttempt(t, attempts)
			}
			if last.state != tasks.RefundAbandoned {
				t.Fatalf("after %d attempts the refund is %s, want abandoned", tc.attempts, last.state)
			}
			got, _ := s.Get(t.Context(), "alice", task.ID)
			if got.RefundState != tasks.RefundAbandoned || !strings.Contains(got.RefundError, tc.err.Error()) {
				t.Errorf("abandoned task = %s %q; want abandoned with the error", got.RefundState, got.RefundError)
			}
			c, err := s.CountRefunds(t.Context())
			if err != nil || c != (tasks.RefundCounts{Abandoned: 1}) {
				t.Errorf("CountRefunds = %+v, %v", c, err)
			}
		})
	}
}

func TestRefundersShareRefunds(t *testing.T) {
	s := openStore(t)
	const n = 12
	for i := range n {
		failedWithReceipt(t, s, fmt.Sprintf("u%d", i))
	}
	var mu sync.Mutex
	calls := map[string]int{}
	done := make(chan struct{}, n)
	refund := func(_ context.Context, t tasks.Task) (string, error) {
		mu.Lock()
		calls[t.ID]++
		mu.Unlock()
		return "refunded", nil
	}
	// Two refunders, as two processes would run.
	for range 2 {
		runRefunder(t, tasks.NewRefunder(s, refund, nil, tasks.WithRefundPoll(5*time.Millisecond),
			tasks.WithRefundHook(func(tasks.Task, tasks.RefundState, error) { done <- struct{}{} })))
	}
	for range n {
		select {
		case <-done:
		case <-time.After(wait):
			t.Fatal("refunds not done")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, c := range calls {
		if c != 1 {
			t.Errorf("task %s refunded %d times", id, c)
		}
	}
	if c, err := s.CountRefunds(t.Context()); err != nil || c != (tasks.RefundCounts{Done: n}) {
		t.Errorf("CountRefunds = %+v, %v; want %d done", c, err, n)
	}
}
