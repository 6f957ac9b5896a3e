package pgstore_test

import (
	"testing"

	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/pgstore"
	"github.com/allowancehq/allowance/app/tasks/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock *storetest.Clock) func() tasks.Store {
		url := pgtest.DB(t)
		return func() tasks.Store {
			s, err := pgstore.Open(t.Context(), url, pgstore.WithClock(clock.Now))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		}
	}, storetest.Options{})
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) tasks.Store {
		s, err := pgstore.Open(b.Context(), pgtest.DB(b))
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
