package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
)

// createKeyed creates a task for user with an idempotency key and digest.
func (s *suite) createKeyed(st tasks.Store, user, key, digest, input string) (tasks.Task, error) {
	return st.Create(s.ctx, tasks.Task{UserID: user, Kind: "echo", Input: json.RawMessage(input), IdempotencyKey: key, RequestDigest: digest})
}

// keyUsed fails unless err is a *KeyUsedError naming the task id.
func (s *suite) keyUsed(what string, err error, id string) tasks.Task {
	s.t.Helper()
	var used *tasks.KeyUsedError
	if !errors.As(err, &used) || !errors.Is(err, tasks.ErrKeyUsed) {
		s.t.Fatalf("%s: %v, want *KeyUsedError", what, err)
	}
	if used.Task.ID != id {
		s.t.Fatalf("%s: KeyUsedError names %s, want %s", what, used.Task.ID, id)
	}
	return used.Task
}

func testIdempotencyKey(s *suite) {
	first, err := s.createKeyed(s.s, "alice", "k1", "d1", `1`)
	if err != nil {
		s.t.Fatalf("Create with a key: %v", err)
	}
	if first.IdempotencyKey != "k1" || first.RequestDigest != "d1" {
		s.t.Errorf("Create kept key %q digest %q, want k1 d1", first.IdempotencyKey, first.RequestDigest)
	}
	sameTask(s.t, "Get of the keyed task", s.get("alice", first.ID), first)

	// A retry while the task is active finds it, not the active conflict;
	// its digest is whatever the first request's was.
	_, err = s.createKeyed(s.s, "alice", "k1", "other", `2`)
	prev := s.keyUsed("Create with the same key while active", err, first.ID)
	sameTask(s.t, "KeyUsedError.Task", prev, first)

	// Another key while active is the active conflict.
	if _, err := s.createKeyed(s.s, "alice", "k2", "d2", `2`); !errors.Is(err, tasks.ErrActiveTask) {
		s.t.Fatalf("Create with another key while active: %v, want ErrActiveTask", err)
	}
	// Another user's key is theirs.
	bob, err := s.createKeyed(s.s, "bob", "k1", "d1", `1`)
	if err != nil || bob.ID == first.ID {
		s.t.Fatalf("bob's Create with alice's key = %s, %v; want a task of his own", bob.ID, err)
	}

	// Once the task has finished, the key still finds it, as it is now.
	s.claim("w", time.Minute)
	done, err := s.s.Finish(s.ctx, first.ID, "w", tasks.StatusSucceeded, json.RawMessage(`{}`), "")
	if err != nil {
		s.t.Fatalf("Finish: %v", err)
	}
	_, err = s.createKeyed(s.s, "alice", "k1", "d1", `1`)
	prev = s.keyUsed("Create with the key of a finished task", err, first.ID)
	sameTask(s.t, "KeyUsedError.Task after Finish", prev, done)

	// No key, and a new key, create tasks; "" is no key, however often.
	t2 := s.create("alice", "echo", `3`)
	if t2.IdempotencyKey != "" {
		s.t.Errorf("task without a key has key %q", t2.IdempotencyKey)
	}
	if _, err := s.s.Cancel(s.ctx, "alice", t2.ID); err != nil {
		s.t.Fatalf("Cancel: %v", err)
	}
	s.create("alice", "echo", `4`)
	if n := len(s.list("alice", tasks.ListOptions{})); n != 3 {
		s.t.Errorf("alice has %d tasks, want 3", n)
	}
}

// testConcurrentIdempotentCreates checks that concurrent Creates with one
// key, from two stores, create one task and name it to all the others, even
// when the user's slot is free and the key decides.
func testConcurrentIdempotentCreates(s *suite) {
	stores := []tasks.Store{s.s, s.store()}
	n := s.opts.Concurrency
	type result struct {
		t   tasks.Task
		err error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for i := range n {
		st := stores[i%len(stores)]
		wg.Go(func() {
			t, err := s.createKeyed(st, "alice", "retry-1", "d", fmt.Sprint(i))
			results <- result{t, err}
		})
	}
	wg.Wait()
	close(results)
	var created []tasks.Task
	var errs []error
	for r := range results {
		if r.err == nil {
			created = append(created, r.t)
		} else {
			errs = append(errs, r.err)
		}
	}
	if len(created) != 1 {
		s.t.Fatalf("%d concurrent Creates with one key created %d tasks, want 1", n, len(created))
	}
	for _, err := range errs {
		s.keyUsed("concurrent Create with one key", err, created[0].ID)
	}
	if ts := s.list("alice", tasks.ListOptions{}); len(ts) != 1 {
		s.t.Errorf("alice has tasks %v, want one", ids(ts))
	}
}
