package algo

import (
	"testing"
	"time"
)

// GCRA's emission interval is ceil(p/n) microseconds: never zero, and n of
// them never fall short of the period.
func TestEmissionInterval(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		p    time.Duration
		want int64
	}{
		{10, 10 * time.Second, 1_000_000},
		{3, 10 * time.Second, 3_333_334},
		{1_000_000, time.Second, 1},
		{1, 365 * 24 * time.Hour, (365 * 24 * time.Hour).Microseconds()},
	} {
		if got := EmissionInterval(tc.n, tc.p.Microseconds()); got != tc.want {
			t.Errorf("EmissionInterval(%d, %v) = %d, want %d", tc.n, tc.p, got, tc.want)
		}
	}
}
