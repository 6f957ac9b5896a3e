package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/app/tasks/storetest"
)

// lastUsed returns the LastUsedAt of user's only key.
func lastUsed(t *testing.T, s tasks.Store, user string) *time.Time {
	t.Helper()
	ks, err := s.ListAPIKeys(t.Context(), user)
	if err != nil || len(ks) != 1 {
		t.Fatalf("ListAPIKeys(%s) = %+v, %v; want one key", user, ks, err)
	}
	return ks[0].LastUsedAt
}

// countingStore counts TouchAPIKeys calls.
type countingStore struct {
	tasks.Store
	touches chan []tasks.APIKeyUse
}

func (s countingStore) TouchAPIKeys(ctx context.Context, uses []tasks.APIKeyUse) error {
	s.touches <- uses
	return s.Store.TouchAPIKeys(ctx, uses)
}

func TestKeyUseRecorder(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := storetest.NewClock(start)
	db := openStore(t, sqlitestore.WithClock(clock.Now))
	for user, b := range map[string]byte{"alice": 1, "bob": 2} {
		if err := db.CreateAPIKey(t.Context(), user, []byte{b, 31: 0}); err != nil {
			t.Fatal(err)
		}
	}
	alice, bob := []byte{1, 31: 0}, []byte{2, 31: 0}
	cs := countingStore{Store: db, touches: make(chan []tasks.APIKeyUse, 10)}
	const interval = time.Minute
	r := tasks.NewKeyUseRecorder(cs, nil, tasks.WithKeyUseInterval(interval), tasks.WithKeyUseClock(clock))
	s := r.Store()

	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()

	// Lookups write nothing: uses are noted, and written an interval
	// later, one write for all of them.
	for range 3 {
		if user, err := s.UserByAPIKey(ctx, alice); err != nil || user != "alice" {
			t.Fatalf("UserByAPIKey = %q, %v", user, err)
		}
		clock.Advance(time.Second)
	}
	if _, err := s.UserByAPIKey(ctx, []byte{9, 31: 0}); err == nil {
		t.Fatal("UserByAPIKey of an unknown key: no error")
	}
	if got := lastUsed(t, db, "alice"); got != nil {
		t.Fatalf("alice's key last used %v before a write; want nothing written yet", got)
	}
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(interval)
	select {
	case uses := <-cs.touches:
		if len(uses) != 1 {
			t.Fatalf("TouchAPIKeys got %d uses, want alice's only", len(uses))
		}
	case <-ctx.Done():
		t.Fatal("no write after an interval")
	}
	if err := clock.WaitTimers(ctx, 1); err != nil { // the write is done
		t.Fatal(err)
	}
	if got, want := lastUsed(t, db, "alice"), start.Add(2*time.Second); got == nil || !got.Equal(want) {
		t.Fatalf("alice's key last used %v, want %v (the latest lookup)", got, want)
	}
	// An interval without lookups writes nothing.
	clock.Advance(interval)
	if err := clock.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case uses := <-cs.touches:
		t.Fatalf("TouchAPIKeys(%d uses) without lookups", len(uses))
	default:
	}
	// Stopping writes what is noted.
	if _, err := s.UserByAPIKey(ctx, bob); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := lastUsed(t, db, "bob"); got == nil || !got.Equal(clock.Now()) {
		t.Errorf("bob's key last used %v after the stop, want %v", got, clock.Now())
	}
}
