package receiptset

import (
	"testing"

	"pgregory.net/rapid"
)

// TestSeqRecords checks seqRecords against a model of what at-most-once
// refunds need, for any sequence of claims, releases, look-ups, clock steps
// and rebuilds over ids close enough together to share entries: an id
// claimed until exp is held at least until exp (a second claim fails), and
// an id never claimed, or released, or whose entry's ids have all expired, is
// not held. An id whose own expiry has passed may still be held while
// another id of its entry lives: both answers are then right.
func TestSeqRecords(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { checkSeqSet(t, seqTable{&seqRecords{}}) })
}

// TestOwnRecords checks Own, the latest block's entry in front of a
// seqRecords, against the same model.
func TestOwnRecords(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { checkSeqSet(t, &ownSet{}) })
}

// seqSet is what seqRecords and Own share.
type seqSet interface {
	Claim(seq uint64, exp, now int64) bool
	Has(seq uint64, now int64) bool
	Release(seq uint64, now int64)
	Rebuild(now int64)
	Len() int
	table() *seqRecords
}

type seqTable struct{ *seqRecords }

func (r seqTable) Rebuild(now int64)  { r.seqRecords.Rebuild(now, 0) }
func (r seqTable) table() *seqRecords { return r.seqRecords }

type ownSet struct{ Own }

func (o *ownSet) Rebuild(now int64)  { o.Own.Rebuild(now) }
func (o *ownSet) table() *seqRecords { return o.Own.table }

func checkSeqSet(t *rapid.T, r seqSet) {
	{
		type held struct {
			exp      int64
			released bool
		}
		model := map[uint64]held{}
		blockExp := map[uint64]int64{} // latest expiry claimed in a block
		now := int64(1000)
		base := rapid.Uint64Range(1, 1<<40).Draw(t, "base")
		drawSeq := func(label string) uint64 { return base + rapid.Uint64Range(0, 300).Draw(t, label) }
		// must reports what has(seq) must answer, or nil when either is right.
		must := func(seq uint64) *bool {
			h, ok := model[seq]
			yes, no := true, false
			switch {
			case !ok || h.released || blockExp[seq/64] <= now:
				return &no
			case h.exp > now:
				return &yes
			}
			return nil
		}
		for range rapid.IntRange(1, 400).Draw(t, "ops") {
			switch rapid.IntRange(0, 6).Draw(t, "op") {
			case 0, 1:
				seq := drawSeq("claim")
				exp := now + rapid.Int64Range(1, 50).Draw(t, "life")
				want := must(seq)
				got := r.Claim(seq, exp, now)
				if want != nil && got == *want {
					t.Fatalf("claim(%d) at %d = %v, but has must be %v", seq, now, got, *want)
				}
				if got {
					model[seq] = held{exp: exp}
					if blockExp[seq/64] <= now {
						blockExp[seq/64] = exp
					} else {
						blockExp[seq/64] = max(blockExp[seq/64], exp)
					}
				}
			case 2:
				now += rapid.Int64Range(0, 20).Draw(t, "step")
			case 3:
				seq := drawSeq("release")
				r.Release(seq, now)
				if h, ok := model[seq]; ok {
					h.released = true
					model[seq] = h
				}
			case 4:
				r.Rebuild(now)
			case 5, 6:
				for seq := range model {
					if want := must(seq); want != nil && r.Has(seq, now) != *want {
						t.Fatalf("has(%d) at %d = %v, want %v", seq, now, !*want, *want)
					}
				}
			}
			if tb := r.table(); tb != nil && tb.used*4 > len(tb.slots)*3 {
				t.Fatalf("%d of %d slots used", tb.used, len(tb.slots))
			}
		}
		live := 0
		for _, exp := range blockExp {
			if exp > now {
				live++
			}
		}
		r.Rebuild(now)
		slots := 0
		if tb := r.table(); tb != nil {
			slots = len(tb.slots)
		}
		if r.Len() != live || slots > max(minRecords, 4*live) {
			t.Fatalf("after a rebuild: %d entries in %d slots; %d blocks are live", r.Len(), slots, live)
		}
	}
}
