package memstore

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

// TestIdentityTable: identities are found by hash and key, whether their
// hashes collide or not and whatever the key's length; removing one keeps
// the others; the table grows and shrinks with its count.
func TestIdentityTable(t *testing.T) {
	var tb table
	long := strings.Repeat("k", maxShortKey+1)
	edge := strings.Repeat("e", maxShortKey)
	keys := []string{"", "a", edge, long, long + "x"}
	const h = 42
	ids := map[string]*identity{}
	for _, k := range keys {
		ids[k] = tb.insert(h, k, 1) // every hash the same: one chain
	}
	ids["other-hash"] = tb.insert(h+1<<20, "a", 3)
	check := func() {
		t.Helper()
		for k, want := range ids {
			hh, key := uint64(h), k
			if k == "other-hash" {
				hh, key = h+1<<20, "a"
			}
			if got := tb.lookup(hh, key); got != want {
				t.Fatalf("lookup(%d, %q) = %p, want %p", hh, key, got, want)
			}
		}
		for _, k := range []string{"b", edge[1:], long[1:], "aa"} {
			if tb.lookup(h, k) != nil {
				t.Fatalf("lookup(%q) found an identity of another key", k)
			}
		}
		if tb.count != len(ids) {
			t.Fatalf("count %d, want %d", tb.count, len(ids))
		}
	}
	check()
	for _, k := range []string{edge, "", long + "x"} { // middle, tail, head of the chain
		tb.remove(ids[k])
		delete(ids, k)
		check()
	}
	if cap(ids["other-hash"].slots) != 3 || cap(ids["a"].slots) != len(ids["a"].buf) {
		t.Fatal("slot capacity")
	}

	for i := range 1000 {
		k := fmt.Sprint(i)
		ids[k] = tb.insert(uint64(i)*0x9e3779b97f4a7c15, k, 1)
	}
	if len(tb.buckets) < tb.count {
		t.Fatalf("%d identities in %d buckets", tb.count, len(tb.buckets))
	}
	tb.filter(func(id *identity) bool { return id.long != "" }) // keep the long keys
	if tb.count != 1 || len(tb.buckets) != 8 || tb.lookup(h, long) != ids[long] {
		t.Fatalf("after filtering: %d identities in %d buckets", tb.count, len(tb.buckets))
	}
	tb.filter(func(*identity) bool { return false })
	if tb.count != 0 || tb.buckets != nil || tb.lookup(h, long) != nil {
		t.Fatal("an empty table keeps its buckets")
	}
}

// TestShardSize: a shard fills two cache lines, so that shards do not share
// one and contend for it, and its lock and clock are on the first alone.
func TestShardSize(t *testing.T) {
	if n := unsafe.Sizeof(shard{}); n != 2*cacheLine {
		t.Fatalf("a shard is %d bytes, want %d", n, 2*cacheLine)
	}
	if o := unsafe.Offsetof(shard{}.ids); o != cacheLine {
		t.Fatalf("a shard's tables start at byte %d, want %d", o, cacheLine)
	}
}
