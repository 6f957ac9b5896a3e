package memstore

import "github.com/allowancehq/allowance"

// outcomeSlab is a block of ChargeOutcomes that refund results are carved
// from, so that a refund seldom allocates: each result gets a piece of a slab,
// capped at its length so that appending to it copies, and a slab is never
// reused, only dropped once it is full; the garbage collector frees it when
// no result refers to it any more. A result kept alive keeps its whole slab
// (about 2 KiB) alive with it.
type outcomeSlab struct {
	buf [slabSize]allowance.ChargeOutcome
	off int
}

const slabSize = 32

// outcomes returns a zeroed slice of n outcomes for a refund's result.
func (s *Store) outcomes(n int) []allowance.ChargeOutcome {
	if n > slabSize/4 {
		return make([]allowance.ChargeOutcome, n)
	}
	sl, _ := s.slabs.Get().(*outcomeSlab)
	if sl == nil || sl.off+n > slabSize {
		sl = new(outcomeSlab)
	}
	out := sl.buf[sl.off : sl.off+n : sl.off+n]
	sl.off += n
	s.slabs.Put(sl)
	return out
}
