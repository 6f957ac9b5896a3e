package mathx

import (
	"math"
	"math/big"
	"testing"

	"pgregory.net/rapid"
)

// TestMulDiv compares MulDiv and MulDivCeil with big-integer arithmetic,
// including products far beyond int64.
func TestMulDiv(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := rapid.Int64Range(0, math.MaxInt64).Draw(t, "a")
		b := rapid.Int64Range(0, math.MaxInt64).Draw(t, "b")
		prod := new(big.Int).Mul(big.NewInt(a), big.NewInt(b))
		// c large enough that the quotient fits in int64.
		minC := new(big.Int).Add(new(big.Int).Quo(prod, big.NewInt(math.MaxInt64)), big.NewInt(1))
		if !minC.IsInt64() {
			t.Skip("no divisor keeps the quotient in range")
		}
		c := rapid.Int64Range(minC.Int64(), math.MaxInt64).Draw(t, "c")
		wantQ, wantR := new(big.Int).QuoRem(prod, big.NewInt(c), new(big.Int))
		q, r := MulDiv(a, b, c)
		if q != wantQ.Int64() || r != wantR.Int64() {
			t.Fatalf("MulDiv(%d, %d, %d) = %d, %d; want %v, %v", a, b, c, q, r, wantQ, wantR)
		}
		wantCeil := wantQ.Int64()
		if wantR.Sign() > 0 {
			wantCeil++
		}
		if got := MulDivCeil(a, b, c); got != wantCeil {
			t.Fatalf("MulDivCeil(%d, %d, %d) = %d, want %d", a, b, c, got, wantCeil)
		}
	})
}

func TestMulDivSmall(t *testing.T) {
	for _, tc := range []struct{ a, b, c, q, r, ceil int64 }{
		{0, 5, 3, 0, 0, 0},
		{7, 3, 2, 10, 1, 11},
		{10, 10, 10, 10, 0, 10},
		{math.MaxInt64, 2, 4, math.MaxInt64 / 2, 2, math.MaxInt64/2 + 1},
	} {
		q, r := MulDiv(tc.a, tc.b, tc.c)
		if q != tc.q || r != tc.r || MulDivCeil(tc.a, tc.b, tc.c) != tc.ceil {
			t.Errorf("MulDiv(%d, %d, %d) = %d, %d, ceil %d; want %d, %d, %d", tc.a, tc.b, tc.c, q, r, MulDivCeil(tc.a, tc.b, tc.c), tc.q, tc.r, tc.ceil)
		}
	}
}
