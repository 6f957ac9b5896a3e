// Package mathx holds the exact integer arithmetic the algorithms share.
package mathx

import "math/bits"

// MulDiv returns floor(a*b/c) and the remainder of a*b by c, computed without
// overflow for non-negative a, b and positive c whose quotient fits in int64.
func MulDiv(a, b, c int64) (q, r int64) {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	uq, ur := bits.Div64(hi, lo, uint64(c))
	return int64(uq), int64(ur)
}

// MulDivCeil returns ceil(a*b/c) under the conditions of MulDiv.
func MulDivCeil(a, b, c int64) int64 {
	q, r := MulDiv(a, b, c)
	if r > 0 {
		q++
	}
	return q
}
