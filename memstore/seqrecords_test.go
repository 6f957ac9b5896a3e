package memstore

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

// TestOwnRecords checks ownRecords, the latest block's entry in front of a
// seqRecords, against the same model.
func TestOwnRecords(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { checkSeqSet(t, &ownSet{}) })
}

// seqSet is what seqRecords and ownRecords share.
type seqSet interface {
	claim(seq uint64, exp, now int64) bool
	has(seq uint64, now int64) bool
	release(seq uint64, now int64)
	rebuild(now int64)
	len() int
	table() *seqRecords
}

type seqTable struct{ *seqRecords }

func (r seqTable) rebuild(now int64)  { r.seqRecords.rebuild(now, 0) }
func (r seqTable) table() *seqRecords { return r.seqRecords }

type ownSet struct{ ownRecords }

func (o *ownSet) rebuild(now int64)  { o.ownRecords.rebuild(now) }
func (o *ownSet) table() *seqRecords { return o.ownRecords.table }

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
				got := r.claim(seq, exp, now)
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
				r.release(seq, now)
				if h, ok := model[seq]; ok {
					h.released = true
					model[seq] = h
				}
			case 4:
				r.rebuild(now)
			case 5, 6:
				for seq := range model {
					if want := must(seq); want != nil && r.has(seq, now) != *want {
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
		r.rebuild(now)
		slots := 0
		if tb := r.table(); tb != nil {
			slots = len(tb.slots)
		}
		if r.len() != live || slots > max(minRecords, 4*live) {
			t.Fatalf("after a rebuild: %d entries in %d slots; %d blocks are live", r.len(), slots, live)
		}
	}
}
