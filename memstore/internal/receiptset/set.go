package receiptset

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"

	"github.com/allowancehq/allowance"
)

// Set is a set of receipt ids, each kept until an expiry time: the
// receipts refunded (or voided) whose charges could otherwise still be
// restored. It is an open-addressing hash table with linear probing, indexed
// by the id's own random bits mixed with a seed (no hashing of the whole id),
// so a refund's look-up and insertion cost one probe sequence. An expired
// entry is absent for look-ups and free for insertions, and the table is
// rebuilt from its live entries when it fills up, so it holds about as many
// entries as are live: refunds that stop leave no map behind, and there are no
// tombstones.
type Set struct {
	seed  uint64
	shift uint8 // 64 - log2(len(slots))
	used  int   // slots holding an id, live or expired
	spare [minRecords]receiptRecord
	slots []receiptRecord // a power of two long, or empty
}

type receiptRecord struct {
	id  allowance.ReceiptID
	exp int64 // µs; 0 marks an empty slot
}

const minRecords = 8

func (r *Set) index(id *allowance.ReceiptID) uint64 {
	x := binary.LittleEndian.Uint64(id[:8]) ^ binary.LittleEndian.Uint64(id[8:]) ^ r.seed
	return (x * 0x9e3779b97f4a7c15) >> r.shift
}

// has reports whether id is held and not expired at now.
func (r *Set) Has(id allowance.ReceiptID, now int64) bool {
	if r == nil || len(r.slots) == 0 {
		return false
	}
	mask := uint64(len(r.slots) - 1)
	for i := r.index(&id); ; i = (i + 1) & mask {
		s := &r.slots[i]
		if s.exp == 0 {
			return false
		}
		if s.id == id {
			return s.exp > now
		}
	}
}

// claim records id until exp (> now) unless it is held already, and reports
// whether it recorded it: one probe sequence for a look-up and an insertion.
func (r *Set) Claim(id allowance.ReceiptID, exp, now int64) bool {
	return r.put(id, exp, now, false)
}

// add records id until exp (> now), replacing an entry for id if there is one.
func (r *Set) Add(id allowance.ReceiptID, exp, now int64) {
	r.put(id, exp, now, true)
}

// put records id until exp (> now), reusing an expired entry met on the way.
// A live entry for id is kept unless replace is set; put reports whether it
// recorded id.
func (r *Set) put(id allowance.ReceiptID, exp, now int64, replace bool) bool {
	if (r.used+1)*4 > len(r.slots)*3 {
		r.Rebuild(now, 1)
	}
	mask := uint64(len(r.slots) - 1)
	free := -1
	for i := r.index(&id); ; i = (i + 1) & mask {
		s := &r.slots[i]
		switch {
		case s.exp == 0:
			if free < 0 {
				free = int(i)
				r.used++
			}
			r.slots[free] = receiptRecord{id: id, exp: exp}
			return true
		case s.id == id:
			if s.exp > now && !replace {
				return false
			}
			s.exp = exp
			return true
		case s.exp <= now && free < 0:
			free = int(i)
		}
	}
}

// release forgets id, as if it had expired.
func (r *Set) Release(id allowance.ReceiptID) {
	if r == nil || len(r.slots) == 0 {
		return
	}
	mask := uint64(len(r.slots) - 1)
	for i := r.index(&id); r.slots[i].exp != 0; i = (i + 1) & mask {
		if r.slots[i].id == id {
			r.slots[i].exp = expired
			return
		}
	}
}

// expired marks a released entry: before any time, but not empty (0).
const expired = -1

// rebuild rehashes the live entries into a table with room for them and
// extra more, at most half full; it drops the table when nothing is live and
// nothing is to come.
func (r *Set) Rebuild(now int64, extra int) {
	live := 0
	for i := range r.slots {
		if r.slots[i].exp > now {
			live++
		}
	}
	old := r.slots
	r.slots, r.used = nil, 0
	n := tableSize(live, extra)
	if n == 0 {
		return
	}
	if n == len(old) && live <= len(r.spare) {
		// Same size: rehash in place, through a small buffer, rather than
		// allocate a table for each burst of short-lived records.
		k := 0
		for i := range old {
			if old[i].exp > now {
				r.spare[k] = old[i]
				k++
			}
		}
		clear(old)
		r.slots = old
		old = r.spare[:k]
	} else {
		r.slots = make([]receiptRecord, n)
		r.shift = uint8(64 - bits.TrailingZeros(uint(n)))
	}
	if r.seed == 0 {
		r.seed = rand.Uint64() | 1
	}
	mask := uint64(n - 1)
	for k := range old {
		if old[k].exp <= now {
			continue
		}
		i := r.index(&old[k].id)
		for r.slots[i].exp != 0 {
			i = (i + 1) & mask
		}
		r.slots[i] = old[k]
		r.used++
	}
}

// len returns the number of entries held, live or expired.
func (r *Set) Len() int {
	if r == nil {
		return 0
	}
	return r.used
}
