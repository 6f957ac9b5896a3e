package algo

// Fixed is the state of a fixed window: the start of the window it counts and
// its count.
type Fixed struct{ Start, Count int64 }

// Roll returns the state as seen at now: the count of now's window.
func (s Fixed) Roll(p, now int64) Fixed {
	w := now - now%p
	if s.Start != w {
		return Fixed{Start: w}
	}
	return s
}

// Charge evaluates a charge of c against s (rolled to now) and returns the
// verdict and, when allowed, the new state.
func (s Fixed) Charge(n, p, c, now int64) (Result, Fixed) {
	s = s.Roll(p, now)
	end := s.Start + p - now
	if s.Count+c > n {
		return s.Peek(n, p, now).denied(end), s
	}
	s.Count += c
	return Result{Allowed: true, Remaining: n - s.Count, ResetAfter: end}, s
}

// Peek returns the units counted in now's window, what is left of n, and
// the time until the window ends (zero when it counts nothing).
func (s Fixed) Peek(n, p, now int64) Usage {
	s = s.Roll(p, now)
	if s.Count == 0 {
		return Usage{Remaining: n}
	}
	return Usage{Used: s.Count, Remaining: n - s.Count, ResetAfter: s.Start + p - now}
}

// Refund gives back up to a units charged in the window starting at window.
// It reports whether that window is still the current one, and how many
// units were given back (never more than the count).
func (s Fixed) Refund(p, a, window, now int64) (Fixed, bool, int64) {
	s = s.Roll(p, now)
	if window != s.Start {
		return s, false, 0
	}
	r := min(a, s.Count)
	s.Count -= r
	return s, true, r
}

// Expiry returns when the window starting at s.Start has ended: a charge in
// it can no longer be refunded, and the state counts nothing.
func (s Fixed) Expiry(p int64) int64 { return s.Start + p }

// Fixed returns s as a fixed window's state.
func (s *State) Fixed() Fixed { return Fixed{Start: s.w[0], Count: s.w[1]} }

// SetFixed stores a fixed window's state in s.
func (s *State) SetFixed(f Fixed) { s.w[0], s.w[1] = f.Start, f.Count }
