package receiptset

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/allowancehq/allowance"
)

// The refund path: claim a receipt id that was not refunded, with live
// records of recent refunds around it, each kept 10 s; expired ones are
// dropped as memstore's sweeper drops them (Rebuild; for the map, delete).
// Set and Own against what they replace, a map of id to expiry.

const live = 4096 // records live at a time

func randomIDs(n int) []allowance.ReceiptID {
	ids := make([]allowance.ReceiptID, n)
	for i := range ids {
		binary.LittleEndian.PutUint64(ids[i][:8], rand.Uint64())
		binary.LittleEndian.PutUint64(ids[i][8:], rand.Uint64())
	}
	return ids
}

func BenchmarkClaim(b *testing.B) {
	ids := randomIDs(1 << 16)
	b.Run("impl=Set", func(b *testing.B) {
		var s Set
		for i := 0; b.Loop(); i++ {
			now := int64(i) * 10e6 / live // live records at a time
			if !s.Claim(ids[i%len(ids)], now+10e6, now) && i >= len(ids) {
				b.Fatal("claimed twice")
			}
			if i%live == 0 {
				s.Rebuild(now, 0)
			}
		}
	})
	b.Run("impl=map", func(b *testing.B) {
		m := map[allowance.ReceiptID]int64{}
		for i := 0; b.Loop(); i++ {
			now := int64(i) * 10e6 / live
			id := ids[i%len(ids)]
			if exp, ok := m[id]; !ok || exp <= now {
				m[id] = now + 10e6
			}
			if i%live == 0 {
				for k, exp := range m {
					if exp <= now {
						delete(m, k)
					}
				}
			}
		}
	})
	// The ids a shard chose count up: Own holds 64 to an entry.
	b.Run("impl=Own", func(b *testing.B) {
		var o Own
		for i := 0; b.Loop(); i++ {
			now := int64(i) * 10e6 / live
			o.Claim(uint64(i), now+10e6, now)
			if i%live == 0 {
				o.Rebuild(now)
			}
		}
	})
	b.Run("impl=map-of-seq", func(b *testing.B) {
		m := map[uint64]int64{}
		for i := 0; b.Loop(); i++ {
			now := int64(i) * 10e6 / live
			if exp, ok := m[uint64(i)]; !ok || exp <= now {
				m[uint64(i)] = now + 10e6
			}
			if i%live == 0 {
				for k, exp := range m {
					if exp <= now {
						delete(m, k)
					}
				}
			}
		}
	})
}
