package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/internal/pgtest"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/pgstore"
)

// TestPoolsShareQueue runs two worker pools, each on its own connection
// pool to one database as two taskd processes would, and checks that every
// task runs exactly once and is reported finished once.
func TestPoolsShareQueue(t *testing.T) {
	url := pgtest.DB(t)
	var stores []*pgstore.Store
	for range 2 {
		s, err := pgstore.Open(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	var mu sync.Mutex
	runs := map[string]int{}
	finished := map[string]int{}
	done := make(chan struct{}, 100)
	kinds := map[string]tasks.Runner{"count": func(_ context.Context, in json.RawMessage) (json.RawMessage, error) {
		mu.Lock()
		runs[string(in)]++
		mu.Unlock()
		return in, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for i, s := range stores {
		p := tasks.NewPool(s, kinds, 3, nil, tasks.WithOwner(fmt.Sprintf("process%d", i)),
			tasks.WithPollInterval(10*time.Millisecond),
			tasks.WithOnFinish(func(_ context.Context, t tasks.Task) {
				mu.Lock()
				finished[t.ID]++
				mu.Unlock()
				done <- struct{}{}
			}))
		wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	const n = 30
	for i := range n {
		if _, err := stores[i%2].Create(t.Context(), tasks.Task{UserID: fmt.Sprint("u", i), Kind: "count", Input: json.RawMessage(fmt.Sprintf(`"%d"`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("tasks did not finish")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != n || len(finished) != n {
		t.Errorf("%d tasks ran and %d finished, want %d", len(runs), len(finished), n)
	}
	for in, c := range runs {
		if c != 1 {
			t.Errorf("task %s ran %d times", in, c)
		}
	}
	for id, c := range finished {
		if c != 1 {
			t.Errorf("OnFinish for %s called %d times", id, c)
		}
	}
}
