package algo

import "github.com/allowancehq/allowance/internal/mathx"

// Sliding is the state of a sliding window: the start of the current window
// and the counts of it and of the window before.
type Sliding struct{ Start, Cur, Prev int64 }

// Roll returns the state as seen at now.
func (s Sliding) Roll(p, now int64) Sliding {
	w := now - now%p
	switch s.Start {
	case w:
		return s
	case w - p:
		return Sliding{Start: w, Prev: s.Cur}
	}
	return Sliding{Start: w}
}

// estimate returns cur + floor(prev*(p-e)/p), e being the time elapsed in the
// current window.
func (s Sliding) estimate(p, now int64) int64 {
	if s.Prev == 0 {
		return s.Cur
	}
	q, _ := mathx.MulDiv(s.Prev, p-(now-s.Start), p)
	return s.Cur + q
}

func (s Sliding) resetAfter(p, now int64) int64 {
	switch {
	case s.Cur > 0:
		return s.Start + 2*p - now
	case s.Prev > 0:
		return s.Start + p - now
	}
	return 0
}

// Charge evaluates a charge of c against s and returns the verdict and, when
// allowed, the new state.
func (s Sliding) Charge(n, p, c, now int64) (Result, Sliding) {
	s = s.Roll(p, now)
	est := s.estimate(p, now)
	if est+c <= n {
		s.Cur += c
		return Result{Allowed: true, Remaining: n - est - c, ResetAfter: s.resetAfter(p, now)}, s
	}
	var retry int64
	if s.Cur+c > n {
		// Only the next window can admit it, once the current count (then the
		// previous one) has decayed to at most n-c: at e' >= p+1-ceil((n-c+1)*p/cur).
		e := p + 1 - mathx.MulDivCeil(n-c+1, p, s.Cur)
		retry = s.Start + p + e - now
	} else {
		// This window admits it once floor(prev*(p-e)/p) <= n-c-cur.
		e := p + 1 - mathx.MulDivCeil(n-c-s.Cur+1, p, s.Prev)
		retry = s.Start + e - now
	}
	return Usage{Used: est, Remaining: max(0, n-est), ResetAfter: s.resetAfter(p, now)}.denied(retry), s
}

// Peek returns the estimated units used at now, what is left of n, and the
// time until both counts are gone.
func (s Sliding) Peek(n, p, now int64) Usage {
	s = s.Roll(p, now)
	est := s.estimate(p, now)
	return Usage{Used: est, Remaining: max(0, n-est), ResetAfter: s.resetAfter(p, now)}
}

// Refund gives back up to a units charged in the window starting at window,
// if that window is the current or the previous one (the ones the estimate
// uses).
func (s Sliding) Refund(p, a, window, now int64) (Sliding, bool, int64) {
	s = s.Roll(p, now)
	switch window {
	case s.Start:
		r := min(a, s.Cur)
		s.Cur -= r
		return s, true, r
	case s.Start - p:
		r := min(a, s.Prev)
		s.Prev -= r
		return s, true, r
	}
	return s, false, 0
}

// Expiry returns when the window starting at s.Start stops counting: at the
// end of the window after it, whose estimate still weighs it.
func (s Sliding) Expiry(p int64) int64 { return s.Start + 2*p }

// Sliding returns s as a sliding window's state.
func (s *State) Sliding() Sliding { return Sliding{Start: s.w[0], Cur: s.w[1], Prev: s.w[2]} }

func (s *State) setSliding(v Sliding) { s.w[0], s.w[1], s.w[2] = v.Start, v.Cur, v.Prev }
