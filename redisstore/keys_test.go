package redisstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/redis/rueidis"
)

// hostileIdentities are user-controlled ids that must neither leave their
// hash tag nor collide: braces, separators, spaces, newlines, invalid UTF-8,
// and long strings (long ones are hashed, and must not collide with a short
// one that spells a hash).
var hostileIdentities = []string{
	"alice", "{alice}", "}", "{", "{}", "a}b{c", "a:b", "a b", "a\\nb", "a\nb", "a\r\n", " ",
	"\xff\xfe\x00", "\x00", "\xc3\x28", "bYWxpY2U", "hYWxpY2U",
	strings.Repeat("x", 48), strings.Repeat("x", 49), strings.Repeat("{", 10<<10),
	strings.Repeat("x", 10<<10), strings.Repeat("x", 10<<10-1) + "y",
}

func TestHostileIdentities(t *testing.T) {
	t.Run("single-node", func(t *testing.T) {
		testHostileIdentities(t, []string{redistest.Server(t)})
	})
	t.Run("cluster", func(t *testing.T) {
		testHostileIdentities(t, redistest.Cluster(t))
	})
}

func testHostileIdentities(t *testing.T, addrs []string) {
	ctx := context.Background()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := rueidisstore.New(c, redisstore.WithPrefix("h:"))
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := allowance.ParseLimits("1/minute; 5/hour")
	l, err := allowance.NewLimiter(s,
		allowance.Rule{Name: "a", Limits: ls, Algorithm: allowance.SlidingLog},
		allowance.Rule{Name: "b", Limits: ls, Algorithm: allowance.GCRA, RefundGuard: allowance.Limit{Count: 1, Period: 60e9}})
	if err != nil {
		t.Fatal(err)
	}
	// Each identity gets its own budget: one check allowed, the next denied.
	for _, id := range hostileIdentities {
		d, err := l.Check(ctx, id)
		if err != nil || !d.Allowed {
			t.Fatalf("first check of %.20q: allowed=%v err=%v; want allowed (a collision?)", id, d.Allowed, err)
		}
	}
	for _, id := range hostileIdentities {
		d, err := l.Check(ctx, id)
		if err != nil || d.Allowed {
			t.Fatalf("second check of %.20q: allowed=%v err=%v; want denied", id, d.Allowed, err)
		}
	}
	// Every key is short, has exactly one hash tag, and all keys of an
	// identity share a slot.
	var keys []string
	for _, node := range addrs {
		nc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{node}, ForceSingleClient: true, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		k, err := nc.Do(ctx, nc.B().Keys().Pattern("h:*").Build()).AsStrSlice()
		nc.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range k {
			if key != "h:receipt-key" { // the deployment's, not an identity's
				keys = append(keys, key)
			}
		}
	}
	// Per identity: 2 logs and their totals for rule a, one GCRA key for
	// both limits of rule b, and the charge's trace.
	if want := len(hostileIdentities) * 6; len(keys) != want {
		t.Fatalf("%d keys, want %d", len(keys), want)
	}
	tags := map[string]int{}
	for _, k := range keys {
		if len(k) > 160 {
			t.Errorf("key %q is %d bytes long", k, len(k))
		}
		open, close := strings.Index(k, "{"), strings.Index(k, "}")
		if strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 || close < open+2 {
			t.Errorf("key %q has not exactly one non-empty hash tag", k)
			continue
		}
		tags[k[open+1:close]]++
	}
	if len(tags) != len(hostileIdentities) {
		t.Fatalf("%d distinct tags for %d identities", len(tags), len(hostileIdentities))
	}
	for _, id := range hostileIdentities {
		if err := l.Reset(ctx, id); err != nil {
			t.Fatalf("reset %.20q: %v", id, err)
		}
		if d, err := l.Check(ctx, id); err != nil || !d.Allowed {
			t.Fatalf("check of %.20q after reset: allowed=%v err=%v", id, d.Allowed, err)
		}
	}
}
