// Package memstore is an in-process allowance.Store: every algorithm, exact
// and atomic per identity, with an injectable clock so tests need no sleeps.
//
// Usage is kept per identity in one of many shards, each behind its own mutex,
// so checks of unrelated identities rarely contend. Memory is bounded by the
// identities active within their longest period: an identity whose every
// window has ended is dropped by a background sweeper (stopped by Close), and
// the record of a refunded receipt is dropped once its windows have ended.
//
// A memstore lives and dies with its process: use redisstore to share limits
// between replicas.
package memstore

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/algo"
)

// Store is an in-process allowance.Store. Create it with New; Close stops its
// sweeper.
type Store struct {
	now    func() time.Time
	seed   maphash.Seed
	shards []shard
	mask   uint64

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ allowance.Store = (*Store)(nil)

type shard struct {
	mu       sync.Mutex
	ids      map[string]*identity
	refunded map[allowance.ReceiptID]int64 // receipt → µs after which its record may go
	voided   map[allowance.ReceiptID]int64
	_        [40]byte // keep shards' mutexes on separate cache lines
}

// identity holds one identity's usage: a slot per rule, limit and algorithm.
type identity struct {
	slots []slot
}

// guardAlg marks a slot that counts refunds for a rule's refund guard.
const guardAlg = 255

type slot struct {
	rule    string
	limit   allowance.Limit
	alg     uint8
	expires int64 // µs at which the slot holds nothing any more
	a, b, c int64 // fixed: start, count; sliding: start, cur, prev; gcra: tat
	log     *algo.Log
}

type config struct {
	now    func() time.Time
	shards int
	sweep  time.Duration
}

// Option configures a Store.
type Option func(*config)

// WithClock makes the store read time from now instead of time.Now. Tests
// pass a fake clock to step through windows without sleeping.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithShards sets the number of shards, rounded up to a power of two; the
// default is 256.
func WithShards(n int) Option { return func(c *config) { c.shards = n } }

// WithSweepInterval sets how often the background sweeper drops identities and
// receipt records whose windows have ended (default one minute). Zero or less
// disables it; Sweep can then be called by hand.
func WithSweepInterval(d time.Duration) Option { return func(c *config) { c.sweep = d } }

// New returns a Store.
func New(opts ...Option) *Store {
	cfg := config{now: time.Now, shards: 256, sweep: time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	n := 1
	for n < cfg.shards {
		n <<= 1
	}
	s := &Store{now: cfg.now, seed: maphash.MakeSeed(), shards: make([]shard, n), mask: uint64(n - 1)}
	for i := range s.shards {
		s.shards[i].ids = make(map[string]*identity)
	}
	if cfg.sweep > 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.sweeper(cfg.sweep)
	}
	return s
}

// Close stops the background sweeper. The store keeps working; it just no
// longer frees memory by itself.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.done
		}
	})
	return nil
}

func (s *Store) sweeper(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Sweep()
		}
	}
}

// Sweep drops every slot, identity and receipt record that holds nothing at
// the current time.
func (s *Store) Sweep() {
	for i := range s.shards {
		now := s.now().UnixMicro()
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, id := range sh.ids {
			live := id.slots[:0]
			for _, sl := range id.slots {
				if sl.expires > now {
					live = append(live, sl)
				}
			}
			clear(id.slots[len(live):])
			id.slots = live
			if len(live) == 0 {
				delete(sh.ids, k)
			}
		}
		for k, exp := range sh.refunded {
			if exp <= now {
				delete(sh.refunded, k)
			}
		}
		for k, exp := range sh.voided {
			if exp <= now {
				delete(sh.voided, k)
			}
		}
		sh.mu.Unlock()
	}
}

// Len returns the number of identities and receipt records held: what memory
// the store uses, for tests and metrics.
func (s *Store) Len() (identities, receipts int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		identities += len(sh.ids)
		receipts += len(sh.refunded) + len(sh.voided)
		sh.mu.Unlock()
	}
	return identities, receipts
}

func (s *Store) shard(id string) *shard {
	return &s.shards[maphash.String(s.seed, id)&s.mask]
}

// find returns the index of the slot for rule, limit and algorithm, or -1.
func (id *identity) find(rule string, l allowance.Limit, alg uint8) int {
	if id == nil {
		return -1
	}
	for i := range id.slots {
		sl := &id.slots[i]
		if sl.limit == l && sl.alg == alg && sl.rule == rule {
			return i
		}
	}
	return -1
}

func (id *identity) add(rule string, l allowance.Limit, alg uint8) int {
	id.slots = append(id.slots, slot{rule: rule, limit: l, alg: alg})
	return len(id.slots) - 1
}

const (
	maxCharges       = allowance.MaxRules * allowance.MaxLimitsPerRule
	maxInlineCharges = 8 // limits per check judged without allocating
)

// Charge charges req.Identity against every limit of req.Rules, all or
// nothing, under the identity's shard lock.
func (s *Store) Charge(ctx context.Context, req allowance.Request) (allowance.Decision, error) {
	if err := ctx.Err(); err != nil {
		return allowance.Decision{}, fmt.Errorf("memstore: charge: %w", err)
	}
	total := 0
	for i := range req.Rules {
		total += len(req.Rules[i].Limits)
	}
	if total > maxCharges {
		return allowance.Decision{}, fmt.Errorf("memstore: charge: %d limits; at most %d per check", total, maxCharges)
	}
	d := allowance.NewDecision(req)
	var resultBuf [maxInlineCharges]algo.Result
	var slotBuf [maxInlineCharges]int
	results, slots := resultBuf[:], slotBuf[:]
	if total > maxInlineCharges {
		results, slots = make([]algo.Result, total), make([]int, total)
	}

	sh := s.shard(req.Identity)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.voided) > 0 {
		if _, ok := sh.voided[req.ID]; ok {
			return allowance.Decision{}, fmt.Errorf("memstore: charge %s: %w", req.ID, allowance.ErrVoided)
		}
	}
	now := s.now().UnixMicro()
	id := sh.ids[req.Identity]

	// First pass: the verdict of every limit, changing nothing.
	allowed := true
	i := 0
	for ri := range req.Rules {
		r := &req.Rules[ri]
		c := r.Amount()
		for _, l := range r.Limits {
			k := id.find(r.Name, l, uint8(r.Algorithm))
			slots[i] = k
			var sl slot
			if k >= 0 {
				sl = id.slots[k]
			}
			results[i] = evaluate(&sl, r.Algorithm, l, c, now, false)
			allowed = allowed && results[i].Allowed
			i++
		}
	}
	if !allowed {
		for j := 0; j < i; j++ {
			res := results[j]
			d.SetLimit(j, res.Allowed, res.Remaining, micros(res.ResetAfter), micros(res.RetryAfter), 0)
		}
		return d, nil
	}

	// Second pass: apply every charge.
	if id == nil {
		id = &identity{slots: make([]slot, 0, total)}
		sh.ids[req.Identity] = id
	}
	i = 0
	for ri := range req.Rules {
		r := &req.Rules[ri]
		c := r.Amount()
		for _, l := range r.Limits {
			k := slots[i]
			if k < 0 {
				k = id.add(r.Name, l, uint8(r.Algorithm))
			}
			sl := &id.slots[k]
			res := evaluate(sl, r.Algorithm, l, c, now, true)
			var window int64
			switch r.Algorithm {
			case allowance.FixedWindow, allowance.SlidingWindow:
				window = sl.a
			case allowance.GCRA:
				window = sl.a
			case allowance.SlidingLog:
				sl.log.Add(algo.Entry{Time: now, ID: req.ID, Charge: i, Units: c})
				window = sl.log.Entries[len(sl.log.Entries)-1].Time
				sl.expires = window + l.Period.Microseconds()
			}
			d.SetLimit(i, true, res.Remaining, micros(res.ResetAfter), 0, window)
			i++
		}
	}
	d.Allow()
	return d, nil
}

// evaluate computes a limit's verdict on sl at now and, when apply is set
// and the charge is allowed, records it in sl. For SlidingLog, apply prunes
// the log; the caller adds the entry.
func evaluate(sl *slot, alg allowance.Algorithm, l allowance.Limit, c, now int64, apply bool) algo.Result {
	n, p := l.Count, l.Period.Microseconds()
	switch alg {
	case allowance.FixedWindow:
		res, st := algo.Fixed{Start: sl.a, Count: sl.b}.Charge(n, p, c, now)
		if apply && res.Allowed {
			sl.a, sl.b, sl.expires = st.Start, st.Count, st.Start+p
		}
		return res
	case allowance.SlidingWindow:
		res, st := algo.Sliding{Start: sl.a, Cur: sl.b, Prev: sl.c}.Charge(n, p, c, now)
		if apply && res.Allowed {
			sl.a, sl.b, sl.c, sl.expires = st.Start, st.Cur, st.Prev, st.Start+2*p
		}
		return res
	case allowance.GCRA:
		res, st := algo.GCRA{TAT: sl.a}.Charge(n, allowance.EmissionInterval(l), c, now)
		if apply && res.Allowed {
			sl.a, sl.expires = st.TAT, st.TAT
		}
		return res
	case allowance.SlidingLog:
		if sl.log == nil {
			if !apply {
				return (&algo.Log{}).Check(n, p, c, now)
			}
			sl.log = &algo.Log{}
		}
		if apply {
			sl.log.Prune(p, now)
			return sl.log.Check(n, p, c, now)
		}
		// Judge without pruning in place: count what Prune would keep.
		lg := *sl.log
		lg.Prune(p, now)
		return lg.Check(n, p, c, now)
	}
	panic(fmt.Sprintf("memstore: unknown algorithm %d", alg))
}

func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// Refund undoes receipt's charges, at most once per receipt ID.
func (s *Store) Refund(ctx context.Context, receipt *allowance.Receipt, guards []allowance.Guard) (allowance.RefundResult, error) {
	res := allowance.RefundResult{ReceiptID: receipt.ID}
	if receipt.Len() == 0 {
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("memstore: refund: %w", err)
	}
	charges := receipt.Charges()
	res.Charges = make([]allowance.ChargeOutcome, len(charges))
	for i, c := range charges {
		res.Charges[i].Charge = c
	}
	sh := s.shard(receipt.Identity)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.now().UnixMicro()

	_, done := sh.refunded[receipt.ID]
	if !done && len(sh.voided) > 0 {
		// A voided ID was refunded (as uncertain) before.
		_, done = sh.voided[receipt.ID]
	}
	if done {
		for i := range res.Charges {
			res.Charges[i].Outcome = allowance.AlreadyRefunded
		}
		return res, nil
	}
	if receipt.Uncertain() {
		// This store never leaves a charge uncertain: a charge that returned
		// an error was not applied. Void the ID so it never can be.
		for i := range res.Charges {
			res.Charges[i].Outcome = allowance.NotCharged
		}
		if sh.voided == nil {
			sh.voided = make(map[allowance.ReceiptID]int64)
		}
		sh.voided[receipt.ID] = receipt.Expiry(time.UnixMicro(now)).UnixMicro()
		return res, nil
	}

	id := sh.ids[receipt.Identity]
	anyDone := false
	for start := 0; start < len(charges); {
		rule := charges[start].Rule
		end := start + 1
		for end < len(charges) && charges[end].Rule == rule {
			end++
		}
		var guard *allowance.Limit
		for gi := range guards {
			if guards[gi].Rule == rule {
				guard = &guards[gi].Limit
			}
		}
		if guard != nil && guardExhausted(id, rule, *guard, now) {
			for i := start; i < end; i++ {
				res.Charges[i].Outcome = allowance.Declined
			}
			start = end
			continue
		}
		anyDone = true
		restoredAny := false
		for i := start; i < end; i++ {
			out, units := refundOne(id, receipt.ID, i, charges[i], now)
			res.Charges[i].Outcome, res.Charges[i].Restored = out, units
			restoredAny = restoredAny || out == allowance.Restored
		}
		if guard != nil && restoredAny {
			countGuard(sh, receipt.Identity, rule, *guard, now)
		}
		start = end
	}
	if anyDone {
		if sh.refunded == nil {
			sh.refunded = make(map[allowance.ReceiptID]int64)
		}
		sh.refunded[receipt.ID] = max(receipt.Expiry(time.UnixMicro(now)).UnixMicro(), now+1)
	}
	return res, nil
}

func refundOne(id *identity, rid allowance.ReceiptID, i int, c allowance.Charge, now int64) (allowance.Outcome, int64) {
	k := id.find(c.Rule, c.Limit, uint8(c.Algorithm))
	if k < 0 {
		return allowance.WindowEnded, 0
	}
	sl := &id.slots[k]
	p := c.Limit.Period.Microseconds()
	var ok bool
	var units int64
	switch c.Algorithm {
	case allowance.FixedWindow:
		var st algo.Fixed
		st, ok, units = algo.Fixed{Start: sl.a, Count: sl.b}.Refund(p, c.Amount, c.Window, now)
		sl.a, sl.b = st.Start, st.Count
	case allowance.SlidingWindow:
		var st algo.Sliding
		st, ok, units = algo.Sliding{Start: sl.a, Cur: sl.b, Prev: sl.c}.Refund(p, c.Amount, c.Window, now)
		sl.a, sl.b, sl.c = st.Start, st.Cur, st.Prev
	case allowance.GCRA:
		var st algo.GCRA
		st, ok, units = algo.GCRA{TAT: sl.a}.Refund(allowance.EmissionInterval(c.Limit), c.Increment(), c.Window, now)
		sl.a = st.TAT
	case allowance.SlidingLog:
		if sl.log != nil {
			sl.log.Prune(p, now)
			units, ok = sl.log.Remove(rid, i)
		}
	}
	if !ok {
		return allowance.WindowEnded, 0
	}
	return allowance.Restored, units
}

func guardExhausted(id *identity, rule string, g allowance.Limit, now int64) bool {
	k := id.find(rule, g, guardAlg)
	if k < 0 {
		return false
	}
	sl := id.slots[k]
	st := algo.Fixed{Start: sl.a, Count: sl.b}.Roll(g.Period.Microseconds(), now)
	return st.Count >= g.Count
}

func countGuard(sh *shard, identityKey, rule string, g allowance.Limit, now int64) {
	id := sh.ids[identityKey]
	if id == nil {
		id = &identity{}
		sh.ids[identityKey] = id
	}
	k := id.find(rule, g, guardAlg)
	if k < 0 {
		k = id.add(rule, g, guardAlg)
	}
	sl := &id.slots[k]
	p := g.Period.Microseconds()
	st := algo.Fixed{Start: sl.a, Count: sl.b}.Roll(p, now)
	sl.a, sl.b, sl.expires = st.Start, st.Count+1, st.Start+p
}

// Peek reports identity's usage of every limit of rules without charging.
func (s *Store) Peek(ctx context.Context, identityKey string, rules []allowance.Rule) ([]allowance.Usage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: peek: %w", err)
	}
	var out []allowance.Usage
	sh := s.shard(identityKey)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.now().UnixMicro()
	id := sh.ids[identityKey]
	for _, r := range rules {
		for _, l := range r.Limits {
			var sl slot
			if k := id.find(r.Name, l, uint8(r.Algorithm)); k >= 0 {
				sl = id.slots[k]
			}
			n, p := l.Count, l.Period.Microseconds()
			var used, reset, remaining int64
			switch r.Algorithm {
			case allowance.FixedWindow:
				used, reset = algo.Fixed{Start: sl.a, Count: sl.b}.Usage(p, now)
				remaining = n - used
			case allowance.SlidingWindow:
				used, reset = algo.Sliding{Start: sl.a, Cur: sl.b, Prev: sl.c}.Usage(p, now)
				remaining = max(0, n-used)
			case allowance.GCRA:
				t := allowance.EmissionInterval(l)
				st := algo.GCRA{TAT: sl.a}
				used, reset = st.Usage(t, now)
				remaining = st.Remaining(n, t, now)
			case allowance.SlidingLog:
				var lg algo.Log
				if sl.log != nil {
					lg = *sl.log
				}
				lg.Prune(p, now)
				used, reset = lg.Usage(p, now)
				remaining = n - used
			}
			out = append(out, allowance.Usage{Rule: r.Name, Limit: l, Algorithm: r.Algorithm, Used: used, Remaining: remaining, ResetAfter: micros(reset)})
		}
	}
	return out, nil
}

// Reset forgets identity's usage of every limit of rules and its refund guard
// counts for them.
func (s *Store) Reset(ctx context.Context, identityKey string, rules []allowance.Rule) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: reset: %w", err)
	}
	sh := s.shard(identityKey)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	id := sh.ids[identityKey]
	if id == nil {
		return nil
	}
	live := id.slots[:0]
	for _, sl := range id.slots {
		if !inRules(sl, rules) {
			live = append(live, sl)
		}
	}
	clear(id.slots[len(live):])
	id.slots = live
	if len(live) == 0 {
		delete(sh.ids, identityKey)
	}
	return nil
}

func inRules(sl slot, rules []allowance.Rule) bool {
	for _, r := range rules {
		if r.Name != sl.rule {
			continue
		}
		if sl.alg == guardAlg {
			return true
		}
		for _, l := range r.Limits {
			if l == sl.limit && sl.alg == uint8(r.Algorithm) {
				return true
			}
		}
	}
	return false
}
