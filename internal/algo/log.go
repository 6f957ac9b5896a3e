package algo

import "slices"

// Entry is one sliding-log entry: c units charged at Time by a receipt's
// charge.
type Entry struct {
	Time   int64
	ID     [16]byte
	Charge int // index of the charge in its receipt
	Units  int64
}

// Log is a sliding log: its entries, oldest first, and their total units.
type Log struct {
	Entries []Entry
	Total   int64
}

// Prune drops the entries that have left the window at now: those at
// Time <= now-p.
func (l *Log) Prune(p, now int64) {
	k := 0
	for k < len(l.Entries) && l.Entries[k].Time <= now-p {
		l.Total -= l.Entries[k].Units
		k++
	}
	if k > 0 {
		l.Entries = l.Entries[k:]
		if len(l.Entries) == 0 {
			l.Entries = nil
		}
	}
}

// Check evaluates a charge of c (after Prune) without recording it.
func (l *Log) Check(n, p, c, now int64) Result {
	if l.Total+c <= n {
		return Result{Allowed: true, Remaining: n - l.Total - c, ResetAfter: p}
	}
	var freed, retry int64
	for _, e := range l.Entries {
		freed += e.Units
		if l.Total-freed+c <= n {
			retry = e.Time + p - now
			break
		}
	}
	return l.Peek(n, p, now).denied(retry)
}

func (l *Log) resetAfter(p, now int64) int64 {
	if len(l.Entries) == 0 {
		return 0
	}
	return l.Entries[len(l.Entries)-1].Time + p - now
}

// Peek returns the units in the window (after Prune), what is left of n,
// and the time until the log is empty.
func (l *Log) Peek(n, p, now int64) Usage {
	return Usage{Used: l.Total, Remaining: n - l.Total, ResetAfter: l.resetAfter(p, now)}
}

// Add records c units charged at now. Entries stay in time order: a clock
// that stepped back records at the newest entry's time.
func (l *Log) Add(e Entry) {
	if k := len(l.Entries); k > 0 && e.Time < l.Entries[k-1].Time {
		e.Time = l.Entries[k-1].Time
	}
	l.Entries = append(l.Entries, e)
	l.Total += e.Units
}

// Remove deletes the entry of the given receipt charge, if it is still in the
// log (after Prune), and returns its units.
func (l *Log) Remove(id [16]byte, charge int) (int64, bool) {
	for i, e := range l.Entries {
		if e.ID == id && e.Charge == charge {
			l.Entries = slices.Delete(l.Entries, i, i+1)
			l.Total -= e.Units
			return e.Units, true
		}
	}
	return 0, false
}

// logExpiry returns when the entry at time t leaves the window.
func logExpiry(t, p int64) int64 { return t + p }

// judgeLog is Judge for a sliding log: Check on what Prune would keep,
// without pruning s's log in place.
func (s *State) judgeLog(l Limit, c, now int64) Result {
	var lg Log
	if s.log != nil {
		lg = *s.log
	}
	lg.Prune(l.P, now)
	return lg.Check(l.N, l.P, c, now)
}

// chargeLog is Charge for a sliding log: prune, check, and add the entry.
func (s *State) chargeLog(l Limit, c, now int64, ref *Ref) (Result, int64, int64) {
	if s.log == nil {
		s.log = &Log{}
	}
	s.log.Prune(l.P, now)
	res := s.log.Check(l.N, l.P, c, now)
	if !res.Allowed {
		return res, 0, 0
	}
	s.log.Add(Entry{Time: now, ID: ref.ID, Charge: ref.Charge, Units: c})
	t := s.log.Entries[len(s.log.Entries)-1].Time
	return res, t, logExpiry(t, l.P)
}

// peekLog is Peek for a sliding log, changing nothing.
func (s *State) peekLog(l Limit, now int64) Usage {
	var lg Log
	if s.log != nil {
		lg = *s.log
	}
	lg.Prune(l.P, now)
	return lg.Peek(l.N, l.P, now)
}

// refundLog is Refund for a sliding log: remove ref's entry, if the window
// still holds it.
func (s *State) refundLog(l Limit, now int64, ref *Ref) (bool, int64) {
	if s.log == nil {
		return false, 0
	}
	s.log.Prune(l.P, now)
	units, ok := s.log.Remove(ref.ID, ref.Charge)
	return ok, units
}
