package algo_test

import (
	"testing"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/algo"
)

// Kind's values are allowance.Algorithm's: the stores convert one to the
// other.
func TestKindsAreAlgorithms(t *testing.T) {
	want := map[allowance.Algorithm]algo.Kind{
		allowance.FixedWindow:   algo.KindFixed,
		allowance.SlidingWindow: algo.KindSliding,
		allowance.SlidingLog:    algo.KindLog,
		allowance.GCRA:          algo.KindGCRA,
	}
	if len(want) != len(allowance.Algorithms()) {
		t.Fatalf("%d kinds for %d algorithms", len(want), len(allowance.Algorithms()))
	}
	for a, k := range want {
		if algo.Kind(a) != k {
			t.Errorf("algo.Kind(%v) = %d, want %d", a, algo.Kind(a), k)
		}
	}
}

// A charge can be refunded until its window stops counting: the fixed
// window's end, the end of the window after a sliding window's, a log
// entry's leaving the window, a GCRA TAT.
func TestExpiry(t *testing.T) {
	const w, p = 1000, 100
	for k, want := range map[algo.Kind]int64{
		algo.KindFixed:   w + p,
		algo.KindSliding: w + 2*p,
		algo.KindLog:     w + p,
		algo.KindGCRA:    w,
		algo.Kind(200):   0,
	} {
		if got := k.Expiry(w, p); got != want {
			t.Errorf("Kind(%d).Expiry(%d, %d) = %d, want %d", k, w, p, got, want)
		}
	}
}

// Kind's operations on a State agree with the typed states' own.
func TestStateDispatch(t *testing.T) {
	const n, p = 3, 1000
	for _, k := range []algo.Kind{algo.KindFixed, algo.KindSliding, algo.KindLog, algo.KindGCRA} {
		l := algo.NewLimit(k, n, p)
		var s algo.State
		now := int64(5000)
		var windows []int64
		for i := 0; i < n; i++ {
			res, w, exp := k.Charge(&s, l, 1, now, &algo.Ref{Charge: i})
			if !res.Allowed || exp != k.Expiry(w, p) {
				t.Fatalf("kind %d: charge %d: %+v, window %d, expires %d", k, i, res, w, exp)
			}
			windows = append(windows, w)
		}
		if res := k.Judge(&s, l, 1, now); res.Allowed {
			t.Fatalf("kind %d: a fourth unit allowed", k)
		}
		if u := k.Peek(&s, l, now); u.Used != n || u.Remaining != 0 {
			t.Fatalf("kind %d: peek %+v", k, u)
		}
		if ok, units := k.Refund(&s, l, 1, windows[n-1], now, &algo.Ref{Charge: n - 1}); !ok || units != 1 {
			t.Fatalf("kind %d: refund: %v %d", k, ok, units)
		}
		if u := k.Peek(&s, l, now); u.Used != n-1 {
			t.Fatalf("kind %d: peek after refund %+v", k, u)
		}
	}
}
