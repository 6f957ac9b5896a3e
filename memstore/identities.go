package memstore

import "strings"

// identity holds one identity's usage: a slot per rule, limit and algorithm.
// A short key is kept inside it and the first slots too, so that a check
// reads one allocation, not three.
type identity struct {
	hash  uint64
	next  *identity // the next identity of the same bucket
	long  string    // the key, when longer than short
	n     uint8     // the key's length, when it is short
	short [maxShortKey]byte
	slots []slot  // buf's, until more are needed
	buf   [2]slot // most rules have one or two limits
}

const maxShortKey = 30

// is reports whether id is the identity key of hash h.
func (id *identity) is(h uint64, key string) bool {
	if id.hash != h {
		return false
	}
	if len(key) > maxShortKey {
		return id.long == key
	}
	return id.long == "" && string(id.short[:id.n]) == key
}

// table is a shard's identities: a hash table with chained buckets, indexed
// by the hash computed before the shard's lock is taken, so that a look-up
// under the lock costs a bucket and the identity, and no hashing.
type table struct {
	buckets []*identity // a power of two long, or empty
	count   int
}

// lookup returns the identity key of hash h, or nil.
func (t *table) lookup(h uint64, key string) *identity {
	if len(t.buckets) == 0 {
		return nil
	}
	for id := t.buckets[h&uint64(len(t.buckets)-1)]; id != nil; id = id.next {
		if id.is(h, key) {
			return id
		}
	}
	return nil
}

// insert adds an empty identity for key, of hash h, with room for n slots.
// The key is copied: it may be part of a larger buffer, such as a request.
func (t *table) insert(h uint64, key string, n int) *identity {
	if t.count >= len(t.buckets) {
		t.resize(max(8, 2*len(t.buckets)))
	}
	id := &identity{hash: h}
	if len(key) > maxShortKey {
		id.long = strings.Clone(key)
	} else {
		id.n = uint8(copy(id.short[:], key))
	}
	id.slots = id.buf[:0]
	if n > len(id.buf) {
		id.slots = make([]slot, 0, n)
	}
	b := &t.buckets[h&uint64(len(t.buckets)-1)]
	id.next = *b
	*b = id
	t.count++
	return id
}

// remove drops id.
func (t *table) remove(id *identity) {
	for p := &t.buckets[id.hash&uint64(len(t.buckets)-1)]; *p != nil; p = &(*p).next {
		if *p == id {
			*p = id.next
			t.count--
			return
		}
	}
}

// filter keeps the identities for which keep returns true and drops the
// others, then shrinks the table to fit what is left.
func (t *table) filter(keep func(*identity) bool) {
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

// resize rehashes every identity into n buckets, n a power of two.
func (t *table) resize(n int) {
	old := t.buckets
	t.buckets = make([]*identity, n)
	mask := uint64(n - 1)
	for _, id := range old {
		for id != nil {
			next := id.next
			b := &t.buckets[id.hash&mask]
			id.next = *b
			*b = id
			id = next
		}
	}
}
