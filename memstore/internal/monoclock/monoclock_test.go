package monoclock

import (
	"testing"
	"time"
)

// TestMicros: the clock reads the wall clock, within what the two reads
// take, and never goes back between anchors.
func TestMicros(t *testing.T) {
	c := New()
	before := time.Now().UnixMicro()
	got := c.Micros()
	after := time.Now().UnixMicro()
	if got < before-1000 || got > after+1000 {
		t.Fatalf("Micros() = %d, wall clock %d to %d", got, before, after)
	}
	last := got
	for range 1000 {
		if now := c.Micros(); now < last {
			t.Fatalf("went back: %d after %d", now, last)
		} else {
			last = now
		}
	}
	c.Anchor()
	if now := c.Micros(); now < before {
		t.Fatalf("after Anchor: %d, before %d", now, before)
	}
}

// BenchmarkNow: the clock against time.Now().UnixMicro(), which reads the
// wall and the monotonic clocks.
func BenchmarkNow(b *testing.B) {
	b.Run("impl=Clock", func(b *testing.B) {
		c := New()
		var sum int64
		for b.Loop() {
			sum += c.Micros()
		}
		_ = sum
	})
	b.Run("impl=time.Now", func(b *testing.B) {
		var sum int64
		for b.Loop() {
			sum += time.Now().UnixMicro()
		}
		_ = sum
	})
}
