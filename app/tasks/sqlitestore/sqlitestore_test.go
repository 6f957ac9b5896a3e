package sqlitestore_test

import (
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/app/tasks/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock *storetest.Clock) func() tasks.Store {
		path := filepath.Join(t.TempDir(), "tasks.db")
		return func() tasks.Store {
			s, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithClock(clock.Now))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		}
	}, storetest.Options{})
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err == nil || !strings.Contains(err.Error(), "newer than this program knows") {
		t.Errorf("Migrate of a newer schema: %v", err)
	}
}

func TestMemory(t *testing.T) {
	s, err := sqlitestore.Open(t.Context(), ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	created, err := s.Create(t.Context(), tasks.Task{UserID: "u", Kind: "echo", Input: json.RawMessage(`[1]`)})
	if err != nil {
		t.Fatal(err)
	}
	// Reads see the writes: both use the one connection of the database.
	got, err := s.Get(t.Context(), "u", created.ID)
	if err != nil || string(got.Input) != "[1]" {
		t.Errorf("Get = %+v, %v", got, err)
	}
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) tasks.Store {
		s, err := sqlitestore.Open(b.Context(), filepath.Join(b.TempDir(), "tasks.db"))
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
