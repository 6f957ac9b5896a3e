package receiptset

import (
	"testing"

	"pgregory.net/rapid"

	"github.com/allowancehq/allowance"
)

// TestRecords compares records with a map for any sequence of insertions,
// look-ups, clock steps and rebuilds, and checks that the table stays about
// as large as what is live.
func TestRecords(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var r *Set
		model := map[allowance.ReceiptID]int64{}
		var ids []allowance.ReceiptID
		now := int64(1000)
		for range rapid.IntRange(1, 300).Draw(t, "ops") {
			switch rapid.IntRange(0, 7).Draw(t, "op") {
			case 0, 1:
				id := allowance.NewReceiptID()
				if len(ids) > 0 && rapid.Bool().Draw(t, "again") {
					id = ids[rapid.IntRange(0, len(ids)-1).Draw(t, "which")]
				} else {
					ids = append(ids, id)
				}
				exp := now + rapid.Int64Range(1, 50).Draw(t, "life")
				if r == nil {
					r = &Set{}
				}
				r.Add(id, exp, now)
				model[id] = exp
			case 2:
				now += rapid.Int64Range(0, 20).Draw(t, "step")
			case 6:
				if len(ids) == 0 {
					break
				}
				id := ids[rapid.IntRange(0, len(ids)-1).Draw(t, "claim")]
				exp := now + rapid.Int64Range(1, 50).Draw(t, "claim life")
				if r == nil {
					r = &Set{}
				}
				want := model[id] <= now
				if got := r.Claim(id, exp, now); got != want {
					t.Fatalf("claim(%v) at %d = %v, want %v (expiry %d)", id, now, got, want, model[id])
				}
				if want {
					model[id] = exp
				}
			case 7:
				if len(ids) == 0 {
					break
				}
				id := ids[rapid.IntRange(0, len(ids)-1).Draw(t, "release")]
				r.Release(id)
				if _, ok := model[id]; ok {
					model[id] = expired
				}
			case 3:
				if r != nil {
					r.Rebuild(now, 0)
				}
			case 4, 5:
				for _, id := range ids {
					want := model[id] > now
					if got := r.Has(id, now); got != want {
						t.Fatalf("has(%v) at %d = %v, want %v (expiry %d)", id, now, got, want, model[id])
					}
				}
			}
			if r != nil && r.used*4 > len(r.slots)*3 {
				t.Fatalf("%d of %d slots used", r.used, len(r.slots))
			}
		}
		live := 0
		for _, exp := range model {
			if exp > now {
				live++
			}
		}
		if r != nil {
			r.Rebuild(now, 0)
			if r.Len() != live || len(r.slots) > max(minRecords, 4*live) {
				t.Fatalf("after a rebuild: %d entries in %d slots; %d are live", r.Len(), len(r.slots), live)
			}
		}
	})
}
