// Package idtable is memstore's table of identities: a hash table with
// chained buckets, indexed by a hash the caller computes before taking its
// shard's lock, so that a look-up under the lock costs a bucket and the
// entry, and no hashing. A short key is kept inside the entry, and the
// entry's value (memstore's slots) too, so that a check reads one
// allocation, not three. Its benchmark measures it against a map of the
// same keys: go test -bench . ./memstore/internal/idtable.
//
// A Table is not safe for concurrent use: memstore holds a shard's lock.
package idtable

import "strings"

// MaxShortKey is the longest key kept inside an entry.
const MaxShortKey = 30

// Entry is one identity: its key and V, the caller's value.
type Entry[V any] struct {
	hash  uint64
	next  *Entry[V] // the next entry of the same bucket
	long  string    // the key, when longer than short
	n     uint8     // the key's length, when it is short
	short [MaxShortKey]byte
	V     V
}

// is reports whether e is the entry of key, of hash h.
func (e *Entry[V]) is(h uint64, key string) bool {
	if e.hash != h {
		return false
	}
	if len(key) > MaxShortKey {
		return e.long == key
	}
	return e.long == "" && string(e.short[:e.n]) == key
}

// Long reports whether e's key is longer than MaxShortKey.
func (e *Entry[V]) Long() bool { return e.long != "" }

// Table is a set of entries by key. The zero Table is empty.
type Table[V any] struct {
	buckets []*Entry[V] // a power of two long, or empty
	count   int
}

// Len returns the number of entries.
func (t *Table[V]) Len() int { return t.count }

// Lookup returns the entry of key, of hash h, or nil.
func (t *Table[V]) Lookup(h uint64, key string) *Entry[V] {
	if len(t.buckets) == 0 {
		return nil
	}
	for e := t.buckets[h&uint64(len(t.buckets)-1)]; e != nil; e = e.next {
		if e.is(h, key) {
			return e
		}
	}
	return nil
}

// Insert adds an entry for key, of hash h, with a zero V. The key is
// copied: it may be part of a larger buffer, such as a request.
func (t *Table[V]) Insert(h uint64, key string) *Entry[V] {
	if t.count >= len(t.buckets) {
		t.resize(max(8, 2*len(t.buckets)))
	}
	e := &Entry[V]{hash: h}
	if len(key) > MaxShortKey {
		e.long = strings.Clone(key)
	} else {
		e.n = uint8(copy(e.short[:], key))
	}
	b := &t.buckets[h&uint64(len(t.buckets)-1)]
	e.next = *b
	*b = e
	t.count++
	return e
}

// Remove drops e.
func (t *Table[V]) Remove(e *Entry[V]) {
	for p := &t.buckets[e.hash&uint64(len(t.buckets)-1)]; *p != nil; p = &(*p).next {
		if *p == e {
			*p = e.next
			t.count--
			return
		}
	}
}

// Filter keeps the entries for which keep returns true and drops the
// others, then shrinks the table to fit what is left.
func (t *Table[V]) Filter(keep func(*Entry[V]) bool) {
	for i := range t.buckets {
		for p := &t.buckets[i]; *p != nil; {
			if keep(*p) {
				p = &(*p).next
			} else {
				*p = (*p).next
				t.count--
			}
		}
	}
	switch n := len(t.buckets); {
	case t.count == 0:
		t.buckets = nil
	case n > 8 && t.count < n/4:
		size := 8
		for size < t.count {
			size *= 2
		}
		t.resize(size)
	}
}

// resize rehashes every entry into n buckets, n a power of two.
func (t *Table[V]) resize(n int) {
	old := t.buckets
	t.buckets = make([]*Entry[V], n)
	mask := uint64(n - 1)
	for _, e := range old {
		for e != nil {
			next := e.next
			b := &t.buckets[e.hash&mask]
			e.next = *b
			*b = e
			e = next
		}
	}
}
