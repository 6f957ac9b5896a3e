package memstore

import "testing"

// TestIdentityChain: identities whose hashes collide share a chain; each is
// found, and removing one keeps the others.
func TestIdentityChain(t *testing.T) {
	sh := &shard{ids: make(map[uint64]*identity)}
	const h = 42
	a := sh.insert(h, "a", 1)
	b := sh.insert(h, "b", 3)
	c := sh.insert(h, "c", 1)
	other := sh.insert(h+1, "a", 1)
	for key, want := range map[string]*identity{"a": a, "b": b, "c": c, "d": nil} {
		if got := sh.lookup(h, key); got != want {
			t.Fatalf("lookup(%q) = %p, want %p", key, got, want)
		}
	}
	if sh.lookup(h+1, "a") != other {
		t.Fatal("lookup by another hash")
	}
	sh.remove(h, b) // middle of the chain
	if sh.lookup(h, "b") != nil || sh.lookup(h, "a") != a || sh.lookup(h, "c") != c {
		t.Fatal("removing the middle of the chain lost another identity")
	}
	sh.remove(h, c) // head
	if sh.lookup(h, "c") != nil || sh.lookup(h, "a") != a {
		t.Fatal("removing the head of the chain lost another identity")
	}
	sh.remove(h, a)
	if _, ok := sh.ids[h]; ok || len(sh.ids) != 1 {
		t.Fatalf("empty chain left in the map: %v", sh.ids)
	}
	if cap(b.slots) != 3 || cap(a.slots) != len(a.buf) {
		t.Fatalf("slot capacity %d and %d, want 3 and %d", cap(b.slots), cap(a.slots), len(a.buf))
	}
}
