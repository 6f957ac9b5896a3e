package algo

// GCRA is the state of a GCRA limit: its theoretical arrival time (0 when
// the bucket is full).
type GCRA struct{ TAT int64 }

// Charge evaluates a charge of c against s and returns the verdict and, when
// allowed, the new state. t is the emission interval ceil(p/n).
func (s GCRA) Charge(n, t, c, now int64) (Result, GCRA) {
	base := max(s.TAT, now)
	tat := base + c*t
	tau := n * t
	if tat-now > tau {
		return s.Peek(n, t, now).denied(tat - tau - now), s
	}
	return Result{Allowed: true, Remaining: (tau - (tat - now)) / t, ResetAfter: tat - now}, GCRA{TAT: tat}
}

// Peek returns the units not yet flowed back at now, rounded up, the units
// a request could be charged, and the time until the bucket is full. t is
// the emission interval.
func (s GCRA) Peek(n, t, now int64) Usage {
	d := max(0, s.TAT-now)
	return Usage{Used: (d + t - 1) / t, Remaining: (n*t - d) / t, ResetAfter: d}
}

// Refund moves the TAT back by inc, never before now, for a charge whose TAT
// right after it was window. A charge whose window has passed has flowed back
// already. It returns the new state, whether anything was still charged, and
// the units given back.
func (s GCRA) Refund(t, inc, window, now int64) (GCRA, bool, int64) {
	if now >= window || s.TAT <= now {
		return s, false, 0
	}
	tat := max(s.TAT-inc, now)
	back := (s.TAT - tat + t - 1) / t
	if tat == now {
		tat = 0
	}
	return GCRA{TAT: tat}, true, min(back, inc/t)
}

// Expiry returns when the bucket is full again: at the TAT, when every unit
// charged has flowed back.
func (s GCRA) Expiry() int64 { return s.TAT }

// GCRA returns s as a GCRA limit's state.
func (s *State) GCRA() GCRA { return GCRA{TAT: s.w[0]} }

func (s *State) setGCRA(g GCRA) { s.w[0] = g.TAT }
