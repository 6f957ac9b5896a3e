package sqlitestore_test

import (
	"path/filepath"
	"testing"

	"github.com/allowancehq/allowance/tasks"
	"github.com/allowancehq/allowance/tasks/sqlitestore"
	"github.com/allowancehq/allowance/tasks/storetest"
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
