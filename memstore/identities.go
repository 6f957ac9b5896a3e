package memstore

import (
	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore/internal/idtable"
)

// identity holds one identity's usage, in its shard's table: a slot per
// rule, limit and algorithm (limits), kept in the table's entry with the
// identity's key (see idtable).
type identity = idtable.Entry[limits]

// limits is an identity's slots. The first are kept inside it, so that a
// check reads one allocation.
type limits struct {
	slots []slot  // buf's, until more are needed
	buf   [2]slot // most rules have one or two limits
}

// insertIdentity adds an empty identity for key, of hash h, to t, with room
// for n slots.
func insertIdentity(t *idtable.Table[limits], h uint64, key string, n int) *identity {
	id := t.Insert(h, key)
	id.V.slots = id.V.buf[:0]
	if n > len(id.V.buf) {
		id.V.slots = make([]slot, 0, n)
	}
	return id
}

// find returns the index of id's slot for rule, limit and kind, or -1 (for
// a nil id too).
func find(id *identity, rule string, l allowance.Limit, kind slotKind) int {
	if id == nil {
		return -1
	}
	for i := range id.V.slots {
		sl := &id.V.slots[i]
		if sl.limit == l && sl.kind == kind && sl.rule == rule {
			return i
		}
	}
	return -1
}

// add appends a slot for rule, limit and kind to id and returns its index.
func add(id *identity, rule string, l allowance.Limit, kind slotKind) int {
	id.V.slots = append(id.V.slots, slot{rule: rule, limit: l, kind: kind})
	return len(id.V.slots) - 1
}
