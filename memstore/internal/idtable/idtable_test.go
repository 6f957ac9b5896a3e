package idtable

import (
	"fmt"
	"strings"
	"testing"
)

// TestTable: entries are found by hash and key, whether their
// hashes collide or not and whatever the key's length; removing one keeps
// the others; the table grows and shrinks with its count.
func TestTable(t *testing.T) {
	var tb Table[int]
	long := strings.Repeat("k", MaxShortKey+1)
	edge := strings.Repeat("e", MaxShortKey)
	keys := []string{"", "a", edge, long, long + "x"}
	const h = 42
	ids := map[string]*Entry[int]{}
	for _, k := range keys {
		ids[k] = tb.Insert(h, k) // every hash the same: one chain
	}
	ids["other-hash"] = tb.Insert(h+1<<20, "a")
	check := func() {
		t.Helper()
		for k, want := range ids {
			hh, key := uint64(h), k
			if k == "other-hash" {
				hh, key = h+1<<20, "a"
			}
			if got := tb.Lookup(hh, key); got != want {
				t.Fatalf("lookup(%d, %q) = %p, want %p", hh, key, got, want)
			}
		}
		for _, k := range []string{"b", edge[1:], long[1:], "aa"} {
			if tb.Lookup(h, k) != nil {
				t.Fatalf("lookup(%q) found an identity of another key", k)
			}
		}
		if tb.count != len(ids) {
			t.Fatalf("count %d, want %d", tb.count, len(ids))
		}
	}
	check()
	for _, k := range []string{edge, "", long + "x"} { // middle, tail, head of the chain
		tb.Remove(ids[k])
		delete(ids, k)
		check()
	}

	for i := range 1000 {
		k := fmt.Sprint(i)
		ids[k] = tb.Insert(uint64(i)*0x9e3779b97f4a7c15, k)
	}
	if len(tb.buckets) < tb.count {
		t.Fatalf("%d identities in %d buckets", tb.count, len(tb.buckets))
	}
	tb.Filter(func(e *Entry[int]) bool { return e.Long() }) // keep the long keys
	if tb.count != 1 || len(tb.buckets) != 8 || tb.Lookup(h, long) != ids[long] {
		t.Fatalf("after filtering: %d identities in %d buckets", tb.count, len(tb.buckets))
	}
	tb.Filter(func(*Entry[int]) bool { return false })
	if tb.count != 0 || tb.buckets != nil || tb.Lookup(h, long) != nil {
		t.Fatal("an empty table keeps its buckets")
	}
}

// BenchmarkLookup: a look-up of one of 10k identities under the lock, the
// hash computed before it (as memstore computes it), against a map of the
// same keys, which hashes the key under the lock.
func BenchmarkLookup(b *testing.B) {
	const n = 10000
	keys := make([]string, n)
	hashes := make([]uint64, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i)
		hashes[i] = uint64(i) * 0x9e3779b97f4a7c15
	}
	b.Run("impl=Table", func(b *testing.B) {
		var t Table[[4]int64]
		for i, k := range keys {
			t.Insert(hashes[i], k)
		}
		for i := 0; b.Loop(); i++ {
			if t.Lookup(hashes[i%n], keys[i%n]) == nil {
				b.Fatal("missing")
			}
		}
	})
	b.Run("impl=map", func(b *testing.B) {
		m := map[string]*[4]int64{}
		for _, k := range keys {
			m[k] = new([4]int64)
		}
		for i := 0; b.Loop(); i++ {
			if m[keys[i%n]] == nil {
				b.Fatal("missing")
			}
		}
	})
}
