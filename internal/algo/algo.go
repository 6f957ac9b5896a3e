// Package algo owns the four algorithms: each one's typed state and its
// operations (charge, refund, peek, expiry), on plain integers in
// microseconds. A file per algorithm holds all of its arithmetic: fixed.go,
// sliding.go, log.go, gcra.go. See allowance.Algorithm for the model.
//
// The Go stores (memstore) keep one State per limit and work on it through
// Kind, which dispatches to the algorithm's type; receipts (Receipt.Expiry)
// ask Kind for a charge's expiry. The Redis store's Lua computes the same
// numbers with one fragment per algorithm (redisstore/scripts/alg_*.lua),
// whose sections follow the methods here (charge, peek, refund, expiry) and
// are assembled in line into the charge, refund and peek scripts; they are
// written for the server's instructions per call, so they follow the Go
// method by method, not statement by statement. redisstore's
// TestMatchesMemstore is the contract that the two agree. The conformance
// suite's model (storetest) is a third writing, apart from this package, so
// that a bug here cannot hide in both a store and its reference.
//
// Every operation takes the state as read (possibly from an earlier window),
// the limit (n units per p microseconds), the amount c (the units charged)
// and the time now.
//
// A check reports every limit's state: after the charge when the check is
// allowed (Charge's Result); when it is denied, as it is now, nothing
// charged (Peek's Usage), for the limits that would have allowed it as for
// those that did not, so that a denial says the same as a peek at that
// instant.
//
// Settlement (charging an overage after the fact, or giving back part of a
// charge) and charges of several identities build on the same operations: a
// partial give-back is Refund of fewer units than were charged.
package algo

import "fmt"

// Kind is an algorithm. Its values are allowance.Algorithm's.
type Kind uint8

// The algorithms, in allowance.Algorithm's order.
const (
	KindFixed   Kind = iota // allowance.FixedWindow
	KindSliding             // allowance.SlidingWindow
	KindLog                 // allowance.SlidingLog
	KindGCRA                // allowance.GCRA
)

// letters are the algorithms' letters, by Kind.
const letters = "fslg"

// Letter returns the algorithm's letter, which names it in Redis keys and
// in the scripts' arguments (the Lua fragment of each algorithm reads it):
// "f", "s", "l" or "g", and "?" for an unknown Kind.
func (k Kind) Letter() string {
	if int(k) < len(letters) {
		return letters[k : k+1]
	}
	return "?"
}

// Limit is a limit as the algorithms use it: N units per P µs, and for GCRA
// the emission interval T, ceil(P/N) (zero for the other algorithms). Make
// it with NewLimit, outside any lock: T is a division.
type Limit struct{ N, P, T int64 }

// NewLimit returns the limit of n units per p µs for kind k.
func NewLimit(k Kind, n, p int64) Limit {
	l := Limit{N: n, P: p}
	if k == KindGCRA {
		l.T = EmissionInterval(n, p)
	}
	return l
}

// EmissionInterval is GCRA's emission interval for n units per p µs:
// ceil(p/n), the time one unit takes to flow back.
func EmissionInterval(n, p int64) int64 { return (p + n - 1) / n }

// Ref names a charge of a receipt: the receipt's id and the charge's index.
// A sliding log keeps it with each entry, to remove the entry on refund.
// Charge and Refund take it by pointer: Go passes an array (the id) on the
// stack, and the copy cost memstore's check about 7 ns.
type Ref struct {
	ID     [16]byte
	Charge int
}

// State is one limit's stored state, whatever its algorithm: the
// algorithm's typed state (Fixed, Sliding, GCRA or Log) packed in three
// words and a log, so that a store keeps one small value per limit. The
// zero State is every algorithm's empty state. Kind's methods read and write
// it; each algorithm's file packs and unpacks its own type.
type State struct {
	w   [3]int64
	log *Log
}

// Result is one limit's verdict and the numbers a Decision reports. When it
// is allowed they are those after the charge; when it is denied, those of
// Peek at the same time.
type Result struct {
	Allowed    bool
	Remaining  int64 // after the charge when allowed, else now
	ResetAfter int64 // µs until usage would be zero with no more charges
	RetryAfter int64 // µs until a charge of the same amount could pass; 0 when allowed
}

// Usage is a limit's state at a time, nothing charged: what a peek reports,
// and what a denied check reports of every limit.
type Usage struct {
	Used       int64 // units counted (see each algorithm's Peek)
	Remaining  int64 // units a request could be charged
	ResetAfter int64 // µs until Used would be zero if nothing more were charged
}

// denied returns the Result of a denied charge: u's numbers and the retry.
func (u Usage) denied(retry int64) Result {
	return Result{Remaining: u.Remaining, ResetAfter: u.ResetAfter, RetryAfter: retry}
}

// Judge returns the verdict of a charge of c on s at now, changing nothing.
func (k Kind) Judge(s *State, l Limit, c, now int64) Result {
	switch k {
	case KindFixed:
		res, _ := s.Fixed().Charge(l.N, l.P, c, now)
		return res
	case KindSliding:
		res, _ := s.Sliding().Charge(l.N, l.P, c, now)
		return res
	case KindGCRA:
		res, _ := s.GCRA().Charge(l.N, l.T, c, now)
		return res
	case KindLog:
		return s.judgeLog(l, c, now)
	}
	panic(k.unknown())
}

// Charge judges a charge of c on s at now and, when it is allowed, records
// it in s, as ref's (see Ref). It returns the verdict, the charge's window
// (what the receipt keeps to refund it; see allowance.Charge) and the time
// at which s holds nothing any more; the last two only when allowed.
func (k Kind) Charge(s *State, l Limit, c, now int64, ref *Ref) (res Result, window, expires int64) {
	switch k {
	case KindFixed:
		var st Fixed
		if res, st = s.Fixed().Charge(l.N, l.P, c, now); res.Allowed {
			s.SetFixed(st)
			return res, st.Start, st.Expiry(l.P)
		}
	case KindSliding:
		var st Sliding
		if res, st = s.Sliding().Charge(l.N, l.P, c, now); res.Allowed {
			s.setSliding(st)
			return res, st.Start, st.Expiry(l.P)
		}
	case KindGCRA:
		var st GCRA
		if res, st = s.GCRA().Charge(l.N, l.T, c, now); res.Allowed {
			s.setGCRA(st)
			return res, st.TAT, st.TAT
		}
	case KindLog:
		return s.chargeLog(l, c, now, ref)
	default:
		panic(k.unknown())
	}
	return res, 0, 0
}

// Peek returns the usage of s at now, changing nothing.
func (k Kind) Peek(s *State, l Limit, now int64) Usage {
	switch k {
	case KindFixed:
		return s.Fixed().Peek(l.N, l.P, now)
	case KindSliding:
		return s.Sliding().Peek(l.N, l.P, now)
	case KindGCRA:
		return s.GCRA().Peek(l.N, l.T, now)
	case KindLog:
		return s.peekLog(l, now)
	}
	panic(k.unknown())
}

// Refund gives back up to amount units of the charge ref made in window (a
// receipt's Charge), and reports whether that charge still counted and the
// units given back. A partial amount gives back part of a charge.
func (k Kind) Refund(s *State, l Limit, amount, window, now int64, ref *Ref) (ok bool, units int64) {
	switch k {
	case KindFixed:
		var st Fixed
		st, ok, units = s.Fixed().Refund(l.P, amount, window, now)
		s.SetFixed(st)
	case KindSliding:
		var st Sliding
		st, ok, units = s.Sliding().Refund(l.P, amount, window, now)
		s.setSliding(st)
	case KindGCRA:
		var st GCRA
		st, ok, units = s.GCRA().Refund(l.T, amount*l.T, window, now)
		s.setGCRA(st)
	case KindLog:
		ok, units = s.refundLog(l, now, ref)
	default:
		panic(k.unknown())
	}
	return ok, units
}

// Expiry returns when a charge made in window of a limit of period p can no
// longer be refunded: when the window stops counting. It is 0 for an unknown
// algorithm, whose charge no store made (a receipt decoded from bytes may
// name one).
func (k Kind) Expiry(window, p int64) int64 {
	switch k {
	case KindFixed:
		return Fixed{Start: window}.Expiry(p)
	case KindSliding:
		return Sliding{Start: window}.Expiry(p)
	case KindGCRA:
		return GCRA{TAT: window}.Expiry()
	case KindLog:
		return logExpiry(window, p)
	}
	return 0
}

func (k Kind) unknown() string { return fmt.Sprintf("algo: unknown algorithm %d", k) }
