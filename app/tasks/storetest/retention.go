package storetest

import (
	"maps"
	"slices"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
)

func (s *suite) deleteFinished(before time.Time, limit int) map[tasks.Status]int {
	s.t.Helper()
	got, err := s.s.DeleteFinished(s.ctx, before, limit)
	if err != nil {
		s.t.Fatalf("DeleteFinished(%v, %d): %v", before, limit, err)
	}
	return got
}

func total(m map[tasks.Status]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// exists reports whether the task of user is still stored.
func (s *suite) exists(user, id string) bool {
	s.t.Helper()
	for _, t := range s.list(user, tasks.ListOptions{Limit: tasks.MaxListLimit}) {
		if t.ID == id {
			return true
		}
	}
	return false
}

func testDeleteFinished(s *suite) {
	if _, err := s.s.DeleteFinished(s.ctx, s.now(), 0); err == nil {
		s.t.Errorf("DeleteFinished with limit 0: no error")
	}
	if got := s.deleteFinished(s.now(), 10); total(got) != 0 {
		s.t.Errorf("DeleteFinished of an empty store = %v", got)
	}
	// Old tasks, one a second, in each final state, and one of them
	// (pending) with its refund still to make.
	old := map[string]tasks.Task{}
	end := func(user string, receipt bool, st tasks.Status) {
		old[user] = s.endTask(user, receipt, st)
		s.clock.Advance(time.Second)
	}
	end("succeeded", true, tasks.StatusSucceeded)
	end("failed", false, tasks.StatusFailed)
	end("pending", true, tasks.StatusFailed)
	end("done", true, tasks.StatusFailed)
	if err := s.s.FinishRefund(s.ctx, old["done"].ID, "refunded"); err != nil {
		s.t.Fatal(err)
	}
	end("abandoned", true, tasks.StatusFailed)
	if err := s.s.AbandonRefund(s.ctx, old["abandoned"].ID, "gave up"); err != nil {
		s.t.Fatal(err)
	}
	c := s.create("canceled", "echo", `1`)
	if _, err := s.s.Cancel(s.ctx, "canceled", c.ID); err != nil {
		s.t.Fatal(err)
	}
	old["canceled"] = s.get("canceled", c.ID)
	s.clock.Advance(time.Second)
	st := s.create("stuck", "echo", `1`)
	s.claim("w", time.Second)
	s.clock.Advance(2 * time.Second)
	if reaped, err := s.s.Reap(s.ctx, 1); err != nil || len(reaped) != 1 || reaped[0].Status != tasks.StatusStuck {
		s.t.Fatalf("Reap = %v, %v; want the stuck task", reaped, err)
	}
	old["stuck"] = s.get("stuck", st.ID)

	// Active tasks, and a recent finished one.
	s.clock.Advance(time.Second)
	running := s.create("running", "echo", `1`)
	s.claim("w", 365*24*time.Hour)
	cutoff := s.now()
	s.clock.Advance(time.Second)
	recent := s.endTask("recent", false, tasks.StatusSucceeded)
	queued := s.create("queued", "echo", `1`)
	s.clock.Advance(30 * 24 * time.Hour)

	// Batches of 2, oldest first: 6 deletable tasks take 3 batches, and
	// the fourth finds nothing.
	var batches []int
	deleted := map[tasks.Status]int{}
	for range 5 {
		got := s.deleteFinished(cutoff, 2)
		batches = append(batches, total(got))
		for st, n := range got {
			deleted[st] += n
		}
	}
	if want := []int{2, 2, 2, 0, 0}; !slices.Equal(batches, want) {
		s.t.Errorf("batch sizes = %v, want %v", batches, want)
	}
	want := map[tasks.Status]int{tasks.StatusSucceeded: 1, tasks.StatusFailed: 3, tasks.StatusCanceled: 1, tasks.StatusStuck: 1}
	if !maps.Equal(deleted, want) {
		s.t.Errorf("deleted by state = %v, want %v", deleted, want)
	}
	for user, t := range old {
		if gone := !s.exists(user, t.ID); gone != (user != "pending") {
			s.t.Errorf("task of %s (%s, refund %q) deleted: %v", user, t.Status, t.RefundState, gone)
		}
	}
	for _, t := range []tasks.Task{queued, running, recent} {
		if !s.exists(t.UserID, t.ID) {
			s.t.Errorf("task of %s was deleted", t.UserID)
		}
	}

	// The oldest first: with a limit of 1, the first to finish goes.
	if got := s.deleteFinished(s.now(), 1); total(got) != 1 || s.exists("recent", recent.ID) {
		s.t.Errorf("DeleteFinished(now, 1) = %v; want the recent task", got)
	}
	// A pending refund keeps its task, however old, until it ends.
	if got := s.deleteFinished(s.now().Add(time.Hour), 100); total(got) != 0 {
		s.t.Errorf("DeleteFinished with only a pending refund and active tasks left = %v", got)
	}
	if err := s.s.FinishRefund(s.ctx, old["pending"].ID, "refunded"); err != nil {
		s.t.Fatal(err)
	}
	if got := s.deleteFinished(s.now(), 100); total(got) != 1 || s.exists("pending", old["pending"].ID) {
		s.t.Errorf("after its refund was done, DeleteFinished = %v; want the task deleted", got)
	}
	// Active tasks are never deleted.
	if got := s.deleteFinished(s.now().Add(100*365*24*time.Hour), 100); total(got) != 0 {
		s.t.Errorf("DeleteFinished with only active tasks left = %v", got)
	}
	for _, t := range []tasks.Task{queued, running} {
		if !s.exists(t.UserID, t.ID) {
			s.t.Errorf("active task of %s was deleted", t.UserID)
		}
	}
}
