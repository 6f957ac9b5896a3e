package taskdb_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/pgstore"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/app/tasks/taskdb"
)

// use migrates s and round-trips a task through it.
func use(t *testing.T, s tasks.Store) {
	t.Helper()
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	created, err := s.Create(t.Context(), tasks.Task{UserID: "u", Kind: "echo"})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := s.Get(t.Context(), "u", created.ID); err != nil {
		t.Fatalf("Get: %v", err)
	}
}

func TestOpenSQLite(t *testing.T) {
	dir := t.TempDir()
	for _, dsn := range []string{"sqlite:" + filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db"), "sqlite::memory:"} {
		s, err := taskdb.Open(t.Context(), dsn)
		if err != nil {
			t.Fatalf("Open(%q): %v", dsn, err)
		}
		if _, ok := s.(*sqlitestore.Store); !ok {
			t.Fatalf("Open(%q) = %T, want *sqlitestore.Store", dsn, s)
		}
		use(t, s)
	}
	for _, name := range []string{"a.db", "b.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("database file %s: %v", name, err)
		}
	}
}

func TestOpenPostgres(t *testing.T) {
	url := pgtest.DB(t)
	s, err := taskdb.Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, ok := s.(*pgstore.Store); !ok {
		t.Fatalf("Open(postgres URL) = %T, want *pgstore.Store", s)
	}
	use(t, s)
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"", "empty DSN"},
		{"sqlite:", "empty path"},
		{"mysql://root:secret@db/tasks", `unknown scheme "mysql"`},
		{"sqlite:" + filepath.Join(t.TempDir(), "no", "such", "dir", "x.db"), "open sqlite task store"},
		{"sqlite:a.db?mode=ro", "must not contain '?'"},
		{"postgres://127.0.0.1:1/x?connect_timeout=1", "open postgres task store"},
	} {
		s, err := taskdb.Open(t.Context(), tc.dsn)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q): no error", tc.dsn)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want it to say %q", tc.dsn, err, tc.want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) error shows the password: %v", tc.dsn, err)
		}
		if errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("Open(%q) error is ErrNotFound", tc.dsn)
		}
	}
}
