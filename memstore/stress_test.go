package memstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/storetest"
)

// TestChargesWhileSweeping: charges and refunds of a few identities from
// many goroutines, while the clock moves on, windows end and sweeps drop and
// the charges add the same identities again, never admit more than the limit
// in a window, and a refund restores what it charged once. Run with -race:
// it is what exercises the shard's read and write locks and the identities'
// own locks together.
func TestChargesWhileSweeping(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := memstore.New(memstore.WithClock(clock.Now), memstore.WithSweepInterval(0), memstore.WithShards(1))
	defer s.Close()
	const limit = 5
	lims := make(map[allowance.Algorithm]*allowance.Limiter)
	for _, alg := range []allowance.Algorithm{allowance.FixedWindow, allowance.SlidingLog} {
		lim, err := allowance.NewLimiter(s, rule(alg, fmt.Sprintf("%d/second", limit)))
		if err != nil {
			t.Fatal(err)
		}
		lims[alg] = lim
	}

	type key struct {
		alg      allowance.Algorithm
		identity string
		window   int64
	}
	var (
		mu       sync.Mutex
		admitted = map[key]int{}
		errs     []error
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() { // the clock and the sweeper
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			clock.Advance(250 * time.Millisecond)
			s.Sweep()
		}
	}()
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d allowance.Decision
			for i := range 400 {
				alg := allowance.FixedWindow
				if i%3 == 0 {
					alg = allowance.SlidingLog
				}
				identity := fmt.Sprintf("user-%d", (g+i)%3)
				if err := lims[alg].CheckInto(ctx, identity, &d); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				if !d.Allowed {
					continue
				}
				refunded := false
				if i%4 == 0 {
					res, err := lims[alg].Refund(ctx, &d.Receipt)
					refunded = err == nil && res.Restored()
					if again, err := lims[alg].Refund(ctx, &d.Receipt); err != nil || again.Restored() {
						mu.Lock()
						errs = append(errs, fmt.Errorf("a second refund of %s restored %+v (err %v)", d.Receipt.ID, again.Charges, err))
						mu.Unlock()
					}
				}
				if alg == allowance.FixedWindow && !refunded {
					mu.Lock()
					admitted[key{alg, identity, d.Receipt.Charge(0).Window}]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d errors; first: %v", len(errs), errs[0])
	}
	for k, n := range admitted {
		if n > limit {
			t.Errorf("%s: %d charges kept in the window at %d µs; the limit is %d", k.identity, n, k.window, limit)
		}
	}
}
