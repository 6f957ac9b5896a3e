package receiptset

import "math/bits"

// seqRecords is the set of refunded receipts among the ids a shard chose
// itself (see shard.newID), which count up: one entry covers 64 consecutive
// ids, with a bit for each, and is kept until the latest expiry of the ids
// it holds. Checks refunded soon after they were made, as a 409 is, land in
// the few entries of the latest ids, so the set stays small and in cache
// however many receipts are refunded: 24 bytes for up to 64 receipts, where
// Set spends 24 bytes on each.
//
// Like Set, it is an open-addressing hash table with linear probing, in
// which an expired entry is absent for look-ups and free for insertions,
// rebuilt from its live entries when it fills up.
type seqRecords struct {
	shift uint8 // 64 - log2(len(slots))
	used  int   // slots holding an entry, live or expired
	slots []seqRecord
}

type seqRecord struct {
	block uint64 // the ids' count divided by 64
	bits  uint64 // bit i: the id block*64+i is held
	exp   int64  // µs; 0 marks an empty slot
}

func (r *seqRecords) index(block uint64) uint64 {
	return (block * 0x9e3779b97f4a7c15) >> r.shift
}

// find returns the live entry of block at now, or nil.
func (r *seqRecords) find(block uint64, now int64) *seqRecord {
	if r == nil || len(r.slots) == 0 {
		return nil
	}
	mask := uint64(len(r.slots) - 1)
	for i := r.index(block); ; i = (i + 1) & mask {
		s := &r.slots[i]
		if s.exp == 0 {
			return nil
		}
		if s.block == block {
			if s.exp <= now {
				return nil
			}
			return s
		}
	}
}

// has reports whether seq is held at now.
func (r *seqRecords) Has(seq uint64, now int64) bool {
	s := r.find(seq/64, now)
	return s != nil && s.bits&(1<<(seq%64)) != 0
}

// claim records seq until at least exp (> now) unless it is held already,
// and reports whether it recorded it.
func (r *seqRecords) Claim(seq uint64, exp, now int64) bool {
	return r.entry(seq/64, now).Claim(uint64(1)<<(seq%64), exp, now)
}

// put holds e, a live entry, merging it with the entry of its block if there
// is one.
func (r *seqRecords) put(e seqRecord, now int64) {
	s := r.entry(e.block, now)
	if s.exp > now {
		e.bits |= s.bits
		e.exp = max(e.exp, s.exp)
	}
	*s = e
}

// entry returns the slot of block's entry, live or expired, or else a slot
// for one, empty (exp 0) but for its block: the caller fills it at once. It
// is one probe sequence, which reuses the first expired slot on its way.
func (r *seqRecords) entry(block uint64, now int64) *seqRecord {
	if (r.used+1)*4 > len(r.slots)*3 {
		r.Rebuild(now, 1)
	}
	mask := uint64(len(r.slots) - 1)
	free := -1
	for i := r.index(block); ; i = (i + 1) & mask {
		s := &r.slots[i]
		switch {
		case s.exp == 0:
			if free < 0 {
				free = int(i)
				r.used++
			}
			r.slots[free] = seqRecord{block: block}
			return &r.slots[free]
		case s.block == block:
			return s
		case s.exp <= now && free < 0:
			free = int(i)
		}
	}
}

// claim records the id of bit in its block's entry s until at least exp
// (> now) unless it is held already, and reports whether it recorded it. An
// entry whose ids have all expired starts afresh.
func (s *seqRecord) Claim(bit uint64, exp, now int64) bool {
	if s.exp <= now {
		*s = seqRecord{block: s.block, bits: bit, exp: exp}
		return true
	}
	if s.bits&bit != 0 {
		return false
	}
	s.bits |= bit
	s.exp = max(s.exp, exp)
	return true
}

// release forgets seq, as if it had expired.
func (r *seqRecords) Release(seq uint64, now int64) {
	if s := r.find(seq/64, now); s != nil {
		s.bits &^= 1 << (seq % 64)
	}
}

// rebuild rehashes the live entries into a table with room for them and
// extra more, at most half full; it drops the table when nothing is live and
// nothing is to come.
func (r *seqRecords) Rebuild(now int64, extra int) {
	var live []seqRecord
	for _, s := range r.slots {
		if s.exp > now {
			live = append(live, s)
		}
	}
	r.slots, r.used = nil, 0
	n := tableSize(len(live), extra)
	if n == 0 {
		return
	}
	r.slots = make([]seqRecord, n)
	r.shift = uint8(64 - bits.TrailingZeros(uint(n)))
	mask := uint64(n - 1)
	for _, s := range live {
		i := r.index(s.block)
		for r.slots[i].exp != 0 {
			i = (i + 1) & mask
		}
		r.slots[i] = s
		r.used++
	}
}

// len returns the number of entries held, live or expired.
func (r *seqRecords) Len() int {
	if r == nil {
		return 0
	}
	return r.used
}

// tableSize returns the size of an open-addressing table for live entries
// and extra more, at most half full: a power of two, at least minRecords, or
// 0 when there is nothing to hold.
func tableSize(live, extra int) int {
	if live+extra == 0 {
		return 0
	}
	return max(minRecords, 1<<bits.Len(uint(2*(live+extra)-1)))
}

// Own is the set of refunded receipts among the ids a shard chose: the
// entry of the latest block refunded, kept in the shard's first cache line
// beside its lock, and a table of the older ones. A refund follows its check
// closely, so most refunds land in the latest block: the claim then writes a
// line the refund owns already, having taken the lock, where an entry in the
// table is a line the other cores wrote too, a cache miss nearly every time.
//
// Every entry of the table is of a block older than cur's: cur moves only to
// newer blocks, handing its entry over to the table, and a claim of an older
// block goes to the table.
type Own struct {
	cur   seqRecord   // the latest block's entry; exp 0 when it holds nothing
	table *seqRecords // older blocks, nil until needed
}

// claim records seq until at least exp (> now) unless it is held already,
// and reports whether it recorded it.
func (o *Own) Claim(seq uint64, exp, now int64) bool {
	block, bit := seq/64, uint64(1)<<(seq%64)
	c := &o.cur
	switch {
	case block == c.block:
		return c.Claim(bit, exp, now)
	case block > c.block:
		if c.exp > now {
			if o.table == nil {
				o.table = &seqRecords{}
			}
			o.table.put(*c, now)
		}
		*c = seqRecord{block: block, bits: bit, exp: exp}
		return true
	}
	if o.table == nil {
		o.table = &seqRecords{}
	}
	return o.table.Claim(seq, exp, now)
}

// has reports whether seq is held at now.
func (o *Own) Has(seq uint64, now int64) bool {
	block := seq / 64
	switch c := &o.cur; {
	case block == c.block:
		return c.exp > now && c.bits&(1<<(seq%64)) != 0
	case block > c.block:
		return false
	}
	return o.table.Has(seq, now)
}

// release forgets seq, as if it had expired.
func (o *Own) Release(seq uint64, now int64) {
	block := seq / 64
	switch c := &o.cur; {
	case block == c.block:
		c.bits &^= 1 << (seq % 64)
	case block < c.block:
		o.table.Release(seq, now)
	}
}

// rebuild drops what has expired at now (see seqRecords.rebuild).
func (o *Own) Rebuild(now int64) {
	if o.cur.exp <= now {
		o.cur.bits, o.cur.exp = 0, 0 // the block stays: the table's are older
	}
	if o.table != nil {
		o.table.Rebuild(now, 0)
		if o.table.Len() == 0 {
			o.table = nil
		}
	}
}

// len returns the number of entries held, live or expired.
func (o *Own) Len() int {
	n := o.table.Len()
	if o.cur.exp != 0 {
		n++
	}
	return n
}
