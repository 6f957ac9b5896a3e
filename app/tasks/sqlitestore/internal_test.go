package sqlitestore

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/allowancehq/allowance/app/tasks"
)

// TestCreateConflictOnInsert covers the conflict that the partial unique
// index decides, which the read before the insert usually answers first.
func TestCreateConflictOnInsert(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.skipConflictRead = true
	first, err := s.Create(t.Context(), tasks.Task{UserID: "u", Kind: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Create(t.Context(), tasks.Task{UserID: "u", Kind: "echo"})
	var active *tasks.ActiveTaskError
	if !errors.As(err, &active) || active.ActiveID != first.ID {
		t.Fatalf("second Create = %v; want *ActiveTaskError naming %s", err, first.ID)
	}
	if ts, err := s.List(t.Context(), "u", tasks.ListOptions{}); err != nil || len(ts) != 1 {
		t.Errorf("List = %d tasks, %v; want 1", len(ts), err)
	}
}

// TestKeyConflictOnInsert covers the retries with one idempotency key that
// the write decides, which the reads before it usually answer first: while
// the keyed task is active, and after it ended.
func TestKeyConflictOnInsert(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.skipConflictRead = true
	keyed := tasks.Task{UserID: "u", Kind: "echo", IdempotencyKey: "k", RequestDigest: "d"}
	first, err := s.Create(t.Context(), keyed)
	if err != nil {
		t.Fatal(err)
	}
	for _, when := range []string{"active", "canceled"} {
		if when == "canceled" {
			if _, err := s.Cancel(t.Context(), "u", first.ID); err != nil {
				t.Fatal(err)
			}
		}
		_, err = s.Create(t.Context(), keyed)
		var used *tasks.KeyUsedError
		if !errors.As(err, &used) || used.Task.ID != first.ID {
			t.Fatalf("retry while the first is %s = %v; want *KeyUsedError naming %s", when, err, first.ID)
		}
	}
	if ts, err := s.List(t.Context(), "u", tasks.ListOptions{}); err != nil || len(ts) != 1 {
		t.Errorf("List = %d tasks, %v; want 1", len(ts), err)
	}
}
