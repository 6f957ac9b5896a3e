package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
)

// Bench measures the store operations behind taskd's requests, each on a
// fresh migrated store from open (closed by Bench):
//
//   - Get: reading a task (GET /v1/tasks/{id}), the baseline;
//   - CreateConflict: a Create refused with *ActiveTaskError (the 409 path);
//   - CreateCancel: a Create that succeeds plus the Cancel that frees the
//     user's slot again (the accepted path and a cancel);
//   - Lifecycle: Create, Claim, Finish (a task's whole life in a worker).
//
// Report them as ratios to Get measured in the same run.
func Bench(b *testing.B, open func(b *testing.B) tasks.Store) {
	setup := func(b *testing.B) tasks.Store {
		s := open(b)
		b.Cleanup(func() { s.Close() })
		if err := s.Migrate(b.Context()); err != nil {
			b.Fatal(err)
		}
		return s
	}
	input := json.RawMessage(`{"seconds": 30}`)
	receipt := make([]byte, 96)

	b.Run("Get", func(b *testing.B) {
		s := setup(b)
		t, err := s.Create(b.Context(), tasks.Task{UserID: "u", Kind: "sleep", Input: input, Receipt: receipt})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.Get(b.Context(), "u", t.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("CreateConflict", func(b *testing.B) {
		s := setup(b)
		if _, err := s.Create(b.Context(), tasks.Task{UserID: "u", Kind: "sleep", Input: input}); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			_, err := s.Create(b.Context(), tasks.Task{UserID: "u", Kind: "sleep", Input: input, Receipt: receipt})
			if !errors.Is(err, tasks.ErrActiveTask) {
				b.Fatalf("Create: %v, want ErrActiveTask", err)
			}
		}
	})
	b.Run("CreateCancel", func(b *testing.B) {
		s := setup(b)
		for b.Loop() {
			t, err := s.Create(b.Context(), tasks.Task{UserID: "u", Kind: "sleep", Input: input, Receipt: receipt})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Cancel(b.Context(), "u", t.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Lifecycle", func(b *testing.B) {
		s := setup(b)
		i := 0
		for b.Loop() {
			i++
			if _, err := s.Create(b.Context(), tasks.Task{UserID: fmt.Sprint("u", i%64), Kind: "echo", Input: input, Receipt: receipt}); err != nil {
				b.Fatal(err)
			}
			t, ok, err := s.Claim(b.Context(), "w", time.Minute)
			if err != nil || !ok {
				b.Fatalf("Claim = %v, %v", ok, err)
			}
			if _, err := s.Finish(b.Context(), t.ID, "w", tasks.StatusSucceeded, input, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}
