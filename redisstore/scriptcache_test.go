package redisstore_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/goredisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// TestScriptCacheFlushed: with the server's script cache emptied (SCRIPT
// FLUSH, as after a restart or a failover to a replica that never ran the
// scripts), each adapter falls back to EVAL once per script and then runs
// them by SHA again; no check, refund or peek fails, and none is applied
// twice.
func TestScriptCacheFlushed(t *testing.T) {
	addr := redistest.Server(t)
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	gc := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { gc.Close() })
	stores := []struct {
		name string
		new  func() (*redisstore.Store, error)
	}{
		{"rueidis", func() (*redisstore.Store, error) {
			return rueidisstore.New(rc, redisstore.WithPrefix(freshPrefix()))
		}},
		{"go-redis", func() (*redisstore.Store, error) {
			return goredisstore.New(gc, redisstore.WithPrefix(freshPrefix()))
		}},
	}
	for _, tc := range stores {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.new()
			if err != nil {
				t.Fatal(err)
			}
			l, err := allowance.NewLimiter(s, allowance.Rule{Name: "r", Limits: allowance.Limits{{Count: 10, Period: 24 * time.Hour}}, Algorithm: allowance.GCRA})
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			if _, err := l.Check(ctx, "u"); err != nil {
				t.Fatalf("check: %v", err)
			}
			for _, cmd := range [][]string{{"SCRIPT", "FLUSH"}, {"CONFIG", "RESETSTAT"}} {
				if _, err := redistest.Command(addr, cmd...); err != nil {
					t.Fatalf("%v: %v", cmd, err)
				}
			}
			d, err := l.Check(ctx, "u")
			if err != nil || !d.Allowed || d.Remaining != 8 {
				t.Fatalf("check after SCRIPT FLUSH: allowed %v, remaining %d, %v; want allowed, 8", d.Allowed, d.Remaining, err)
			}
			if res, err := l.Refund(ctx, &d.Receipt); err != nil || res.Outcome() != allowance.Restored {
				t.Fatalf("refund after SCRIPT FLUSH: %v, %v; want restored", res.Outcome(), err)
			}
			u, err := l.Peek(ctx, "u")
			if err != nil || len(u) != 1 || u[0].Used != 1 {
				t.Fatalf("peek after SCRIPT FLUSH: %+v, %v; want 1 used", u, err)
			}
			if d, err := l.Check(ctx, "u"); err != nil || d.Remaining != 8 {
				t.Fatalf("check by SHA again: remaining %d, %v; want 8", d.Remaining, err)
			}
			stats, err := redistest.Command(addr, "INFO", "commandstats")
			if err != nil {
				t.Fatal(err)
			}
			// Three scripts loaded once each by EVAL; every call tried by
			// SHA first: three NOSCRIPT, then the second check by SHA.
			if got := calls(stats, "eval"); got != 3 {
				t.Errorf("EVAL calls = %d; want 3, one per script\n%s", got, stats)
			}
			if got := calls(stats, "evalsha"); got != 4 {
				t.Errorf("EVALSHA calls = %d; want 4\n%s", got, stats)
			}
		})
	}
}

// calls reads a command's call count from INFO commandstats; 0 when absent.
// Failed calls (NOSCRIPT) count too.
func calls(stats, cmd string) int {
	for line := range strings.SplitSeq(stats, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		count, _, _ := strings.Cut(rest, ",")
		n, _ := strconv.Atoi(count)
		return n
	}
	return 0
}
