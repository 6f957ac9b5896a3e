// Package memstore is an in-process allowance.Store: every algorithm, exact
// and atomic per identity, with an injectable clock so tests need no sleeps.
//
// Usage is kept per identity in one of many shards, each behind its own mutex,
// so checks of unrelated identities rarely contend. Memory is bounded by the
// identities active within their longest period: an identity whose every
// window has ended is dropped by a background sweeper (stopped by Close), and
// the record of a refunded receipt is forgotten once its windows have ended
// (a later refund of it then reports WindowEnded: nothing is restored twice).
//
// Time is the wall clock in microseconds, read once a call before the shard's
// lock is taken; per shard it never goes back, so a clock that steps back
// cannot roll a window back. To keep that read cheap, the default clock reads
// only the monotonic clock: it takes the wall clock at New and again at every
// sweep of the background sweeper, and adds the monotonic time elapsed since.
// Windows are therefore aligned to the wall clock, except that a step of the
// wall clock (set by an operator, or by NTP at start-up) is followed only at
// the next sweep; NTP's usual gradual correction (a slew) changes the rate of
// the monotonic clock too (on Linux), so it is followed at once. Without the
// sweeper (WithSweepInterval(0)) the wall clock is read at New only.
//
// Receipts are signed (allowance.ReceiptKeys) with a random key made by New,
// unless WithReceiptKeys gives others: a receipt refunds only in the store
// that charged it, which is the only store that holds its usage anyway. A
// receipt that the store's keys do not verify restores nothing, and its
// outcome is allowance.Unverified (counted by Unverified).
//
// A memstore lives and dies with its process: use redisstore to share limits
// between replicas.
package memstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/algo"
	"github.com/allowancehq/allowance/memstore/internal/idtable"
	"github.com/allowancehq/allowance/memstore/internal/monoclock"
	"github.com/allowancehq/allowance/memstore/internal/receiptset"
)

// Store is an in-process allowance.Store. Create it with New; Close stops its
// sweeper.
type Store struct {
	now    func() int64     // µs
	sys    *monoclock.Clock // the default clock, re-anchored by the sweeper
	seed   maphash.Seed
	keys   *allowance.ReceiptKeys
	shards []shard
	mask   uint64
	idem   idempotency

	unverified atomic.Uint64 // refunds refused as unverified

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ allowance.Store = (*Store)(nil)

// shard is a part of the store's identities and receipt records, behind its
// own lock. It is two cache lines: the lock, the shard's clock and receipt
// count, written by every call, and the latest refunds of the shard's own
// receipts, written by most refunds, on the first; the tables, written only
// when an identity or a record is added or dropped, on the second. The line
// of the lock passes from core to core anyway, and goroutines waiting for the
// lock poll it; the second line stays in every core's cache.
type shard struct {
	mu       sync.Mutex
	last     int64                 // latest time seen, µs: the shard's clock never goes back
	seq      uint64                // receipt ids chosen by the shard so far
	tag      uint64                // the first half of the shard's receipt ids
	own      receiptset.Own        // receipts of ids the shard chose, refunded, until their windows end
	ids      idtable.Table[limits] // the shard's identities
	refunded *receiptset.Set       // other receipts refunded, until their windows end
	voided   *receiptset.Set       // uncertain receipts voided
	_        [cacheLine - 48]byte
}

// cacheLine is the size of a cache line on the usual processors, in bytes.
const cacheLine = 64

// clock returns now, or the latest time the shard has seen if that is later.
// The time is read before the lock is taken, to keep the critical section
// short; this keeps it monotonic per identity all the same, so that a window
// is never rolled back and the log stays in order, also when the system
// clock steps back.
func (sh *shard) clock(now int64) int64 {
	if now < sh.last {
		return sh.last
	}
	sh.last = now
	return now
}

// newID returns a receipt id unique among the store's: the shard's tag (the
// store's random salt plus the shard's index, so it differs between shards
// and between stores) and the shard's count of ids, big-endian so that the
// ids of a shard read in order. It costs an increment under the lock the
// charge holds anyway, where a random id costs two draws of a CSPRNG. The ids
// are unique, not secret: refunding needs the whole receipt, which the
// server keeps.
func (sh *shard) newID() (id allowance.ReceiptID) {
	sh.seq++
	binary.BigEndian.PutUint64(id[:8], sh.tag)
	binary.BigEndian.PutUint64(id[8:], sh.seq)
	return id
}

// count returns the count of id if the shard chose it (see newID).
func (sh *shard) count(id allowance.ReceiptID) (uint64, bool) {
	if binary.BigEndian.Uint64(id[:8]) != sh.tag {
		return 0, false
	}
	return binary.BigEndian.Uint64(id[8:]), true
}

// claim records the refund of id until exp (> now) unless it was refunded
// already, and reports whether it recorded it.
func (sh *shard) claim(id allowance.ReceiptID, exp, now int64) bool {
	if n, ok := sh.count(id); ok {
		return sh.own.Claim(n, exp, now)
	}
	if sh.refunded == nil {
		sh.refunded = &receiptset.Set{}
	}
	return sh.refunded.Claim(id, exp, now)
}

// wasRefunded reports whether id's refund is recorded at now.
func (sh *shard) wasRefunded(id allowance.ReceiptID, now int64) bool {
	if n, ok := sh.count(id); ok {
		return sh.own.Has(n, now)
	}
	return sh.refunded.Has(id, now)
}

// unclaim forgets the refund of id that claim recorded.
func (sh *shard) unclaim(id allowance.ReceiptID, now int64) {
	if n, ok := sh.count(id); ok {
		sh.own.Release(n, now)
		return
	}
	sh.refunded.Release(id)
}

// slot is an identity's usage of one limit of a rule, or its count of
// refunds for a rule's refund guard.
type slot struct {
	rule    string
	limit   allowance.Limit
	kind    slotKind
	expires int64      // µs at which the slot holds nothing any more
	state   algo.State // the algorithm's state; a guard's is a fixed window
}

// slotKind says what a slot counts: a limit of an algorithm, or, when guard
// is set, the refunds of a rule's refund guard (a fixed window of refunds).
type slotKind struct {
	alg   algo.Kind
	guard bool
}

// limitSlot is the kind of a slot for a limit of algorithm alg.
func limitSlot(alg allowance.Algorithm) slotKind { return slotKind{alg: algo.Kind(alg)} }

// guardSlot is the kind of a slot counting a refund guard's refunds.
var guardSlot = slotKind{alg: algo.KindFixed, guard: true}

// limitOf returns l as the algorithms use it (a division for GCRA: not
// under a lock).
func limitOf(alg allowance.Algorithm, l allowance.Limit) algo.Limit {
	return algo.NewLimit(algo.Kind(alg), l.Count, l.Period.Microseconds())
}

// micros returns the store's time in µs: the system clock's without an
// indirect call, or the clock of WithClock.
func (s *Store) micros() int64 {
	if s.sys != nil {
		return s.sys.Micros()
	}
	return s.now()
}

type config struct {
	now    func() time.Time
	shards int
	sweep  time.Duration
	keys   *allowance.ReceiptKeys
}

// Option configures a Store.
type Option func(*config)

// WithClock makes the store read time from now instead of the system clock.
// Tests pass a fake clock to step through windows without sleeping. The
// store's time never goes back for an identity: a clock that steps back reads
// as the latest time already seen. now is called once per call of the store,
// so it should be cheap; the default clock reads only the monotonic clock
// (see the package documentation), where time.Now reads two clocks.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithShards sets the number of shards, rounded up to a power of two; the
// default is 256.
func WithShards(n int) Option { return func(c *config) { c.shards = n } }

// WithSweepInterval sets how often the background sweeper drops identities and
// receipt records whose windows have ended (default one minute). Zero or less
// disables it; Sweep can then be called by hand.
func WithSweepInterval(d time.Duration) Option { return func(c *config) { c.sweep = d } }

// WithReceiptKeys makes the store sign receipts with keys' first key and
// refund only receipts that one of keys verifies. The default (also when
// keys is nil) is a random key of the store's own: receipts refund in the
// store that charged them, and nowhere else. Give keys only to share them
// with other stores, such as a test's.
func WithReceiptKeys(keys *allowance.ReceiptKeys) Option {
	return func(c *config) { c.keys = keys }
}

// New returns a Store.
func New(opts ...Option) *Store {
	cfg := config{shards: 256, sweep: time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	n := 1
	for n < cfg.shards {
		n <<= 1
	}
	s := &Store{seed: maphash.MakeSeed(), keys: cfg.keys, shards: make([]shard, n), mask: uint64(n - 1)}
	s.idem.shards = make([]idemShard, n)
	if s.keys == nil {
		s.keys = allowance.RandomReceiptKeys()
	}
	salt := rand.Uint64()
	for i := range s.shards {
		s.shards[i].tag = salt + uint64(i)
	}
	if cfg.now != nil {
		now := cfg.now
		s.now = func() int64 { return now().UnixMicro() }
	} else {
		s.sys = monoclock.New()
		s.now = s.sys.Micros
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
			if s.sys != nil {
				s.sys.Anchor()
			}
			s.Sweep()
		}
	}
}

// Sweep drops every slot, identity and receipt record that holds nothing at
// the current time.
func (s *Store) Sweep() {
	for i := range s.shards {
		sh := &s.shards[i]
		now := s.micros()
		sh.mu.Lock()
		now = sh.clock(now)
		sh.ids.Filter(func(id *identity) bool {
			live := id.V.slots[:0]
			for _, sl := range id.V.slots {
				if sl.expires > now {
					live = append(live, sl)
				}
			}
			clear(id.V.slots[len(live):])
			id.V.slots = live
			return len(live) > 0
		})
		if sh.refunded != nil {
			sh.refunded.Rebuild(now, 0)
		}
		sh.own.Rebuild(now)
		if sh.voided != nil {
			sh.voided.Rebuild(now, 0)
		}
		sh.mu.Unlock()
	}
	s.sweepIdempotency()
}

// Unverified returns the number of refunds refused since New because the
// store's keys did not verify the receipt (allowance.Unverified): altered or
// forged receipts, or receipts of another store. Worth an alert.
func (s *Store) Unverified() uint64 { return s.unverified.Load() }

// Len returns the number of identities and receipt records held: what memory
// the store uses, for tests and metrics. A record holds one refunded or voided
// receipt, up to 64 refunded receipts whose ids the store chose in a row, or
// one idempotent charge (allowance.Request.IdempotencyKey).
func (s *Store) Len() (identities, receipts int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		identities += sh.ids.Len()
		receipts += sh.own.Len() + sh.refunded.Len() + sh.voided.Len()
		sh.mu.Unlock()
	}
	return identities, receipts + s.idempotencyRecords()
}

// locate returns identity's shard and hash.
func (s *Store) locate(identity string) (*shard, uint64) {
	h := maphash.String(s.seed, identity)
	return &s.shards[h>>32&s.mask], h
}

// admit, called with sh.mu held, refuses a charge whose receipt id was
// voided, and returns the charge's receipt id (rid, or a new one when rid is
// zero) and the shard's reading of the clock for now.
func (sh *shard) admit(rid allowance.ReceiptID, now int64) (allowance.ReceiptID, int64, bool) {
	if rid.IsZero() {
		// Skip an id voided before it was chosen: a caller can void any id,
		// and the store's are easy to guess.
		rid = sh.newID()
		for sh.voided.Len() > 0 && sh.voided.Has(rid, now) {
			rid = sh.newID()
		}
		return rid, sh.clock(now), true
	}
	if sh.voided.Len() > 0 && sh.voided.Has(rid, now) {
		return rid, now, false
	}
	return rid, sh.clock(now), true
}

func voidedError(rid allowance.ReceiptID) error {
	return fmt.Errorf("memstore: charge %s: %w", rid, allowance.ErrVoided)
}

const (
	maxCharges       = allowance.MaxRules * allowance.MaxLimitsPerRule
	maxInlineCharges = 8 // limits per check judged without allocating
)

// Charge charges req.Identity against every limit of req.Rules, all or
// nothing, under the identity's shard lock.
//
// A single limit, the common case, is judged and charged in one evaluation.
func (s *Store) Charge(ctx context.Context, req allowance.Request, d *allowance.Decision) error {
	d.Reset(req)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: charge: %w", err)
	}
	if req.IdempotencyKey != "" {
		return s.chargeIdempotent(req, d)
	}
	return s.charge(req, d)
}

// charge is Charge once d is reset.
func (s *Store) charge(req allowance.Request, d *allowance.Decision) error {
	if len(req.Rules) != 1 || len(req.Rules[0].Limits) != 1 {
		return s.chargeMany(req, d)
	}
	r := &req.Rules[0]
	l := r.Limits[0]
	c := req.Amount(0)
	lim, kind := limitOf(r.Algorithm, l), limitSlot(r.Algorithm)
	sh, h := s.locate(req.Identity)
	now := s.micros()

	sh.mu.Lock()
	rid, now, ok := sh.admit(req.ID, now)
	if !ok {
		sh.mu.Unlock()
		return voidedError(req.ID)
	}
	id := sh.ids.Lookup(h, req.Identity)
	k := find(id, r.Name, l, kind)
	if k < 0 {
		if id == nil {
			id = insertIdentity(&sh.ids, h, req.Identity, 1)
		}
		k = add(id, r.Name, l, kind)
	}
	sl := &id.V.slots[k]
	// Called here rather than through a method of slot, which would not be
	// inlined: a call more on the hot path.
	res, window, expires := kind.alg.Charge(&sl.state, lim, c, now, &algo.Ref{ID: rid})
	if res.Allowed {
		sl.expires = expires
	}
	sh.mu.Unlock()

	d.Receipt.ID = rid
	d.SetLimit(0, res.Allowed, res.Remaining, micros(res.ResetAfter), micros(res.RetryAfter), window)
	if res.Allowed {
		d.Allow()
		s.keys.Sign(&d.Receipt)
	}
	return nil
}

// chargeMany is Charge for several limits: a first pass judges every limit
// without changing anything, a second applies them all when all allow.
func (s *Store) chargeMany(req allowance.Request, d *allowance.Decision) error {
	total := 0
	for i := range req.Rules {
		total += len(req.Rules[i].Limits)
	}
	if total > maxCharges {
		return fmt.Errorf("memstore: charge: %d limits; at most %d per check", total, maxCharges)
	}
	var resultBuf [maxInlineCharges]algo.Result
	var slotBuf [maxInlineCharges]int
	var windowBuf [maxInlineCharges]int64
	results, slots, windows := resultBuf[:total], slotBuf[:total], windowBuf[:total]
	if total > maxInlineCharges {
		results, slots, windows = make([]algo.Result, total), make([]int, total), make([]int64, total)
	}
	sh, h := s.locate(req.Identity)
	now := s.micros()

	sh.mu.Lock()
	rid, now, ok := sh.admit(req.ID, now)
	if !ok {
		sh.mu.Unlock()
		return voidedError(req.ID)
	}
	id := sh.ids.Lookup(h, req.Identity)

	allowed := true
	i := 0
	for ri := range req.Rules {
		r := &req.Rules[ri]
		c := req.Amount(ri)
		kind := limitSlot(r.Algorithm)
		for _, l := range r.Limits {
			k := find(id, r.Name, l, kind)
			slots[i] = k
			var st algo.State
			if k >= 0 {
				st = id.V.slots[k].state
			}
			results[i] = kind.alg.Judge(&st, limitOf(r.Algorithm, l), c, now)
			allowed = allowed && results[i].Allowed
			i++
		}
	}
	if allowed {
		if id == nil {
			id = insertIdentity(&sh.ids, h, req.Identity, total)
		}
		i = 0
		for ri := range req.Rules {
			r := &req.Rules[ri]
			c := req.Amount(ri)
			kind := limitSlot(r.Algorithm)
			for _, l := range r.Limits {
				k := slots[i]
				if k < 0 {
					k = add(id, r.Name, l, kind)
				}
				sl := &id.V.slots[k]
				var expires int64
				results[i], windows[i], expires = kind.alg.Charge(&sl.state, limitOf(r.Algorithm, l), c, now, &algo.Ref{ID: rid, Charge: i})
				if results[i].Allowed {
					sl.expires = expires
				}
				i++
			}
		}
	} else {
		// A denial reports every limit as it is now, nothing charged: the
		// limits that would have allowed the request too.
		i = 0
		for ri := range req.Rules {
			r := &req.Rules[ri]
			for _, l := range r.Limits {
				if results[i].Allowed {
					var st algo.State
					if k := slots[i]; k >= 0 {
						st = id.V.slots[k].state
					}
					u := algo.Kind(r.Algorithm).Peek(&st, limitOf(r.Algorithm, l), now)
					results[i].Remaining, results[i].ResetAfter = u.Remaining, u.ResetAfter
				}
				i++
			}
		}
	}
	sh.mu.Unlock()

	d.Receipt.ID = rid
	for j, res := range results {
		d.SetLimit(j, res.Allowed, res.Remaining, micros(res.ResetAfter), micros(res.RetryAfter), windows[j])
	}
	if allowed {
		d.Allow()
		s.keys.Sign(&d.Receipt)
	}
	return nil
}

func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// Refund undoes receipt's charges, at most once per receipt ID. A receipt
// that the store's keys do not verify changes nothing: every outcome is
// allowance.Unverified.
func (s *Store) Refund(ctx context.Context, receipt *allowance.Receipt, guards []allowance.Guard, res *allowance.RefundResult) error {
	if err := ctx.Err(); err != nil {
		res.Reset(receipt.ID, 0)
		return fmt.Errorf("memstore: refund: %w", err)
	}
	res.Reset(receipt.ID, receipt.Len())
	if receipt.Len() == 0 {
		return nil
	}
	if !s.keys.Verify(receipt) {
		res.SetUnverified(receipt)
		s.unverified.Add(1)
		return nil
	}
	if receipt.Len() == 1 && !receipt.Uncertain() && !guarded(guards, receipt.Rules()[0].Name) {
		s.refundOne(receipt, res.Charges)
		return nil
	}
	// GCRA's emission intervals are divisions: made here, not under the
	// lock.
	var limitBuf [maxInlineCharges]algo.Limit
	limits := limitBuf[:0]
	if receipt.Len() > maxInlineCharges {
		limits = make([]algo.Limit, 0, receipt.Len())
	}
	for i := range res.Charges {
		c := receipt.Charge(i)
		res.Charges[i].Charge = c
		limits = append(limits, limitOf(c.Algorithm, c.Limit))
	}
	charges := res.Charges
	sh, h := s.locate(receipt.Identity)
	now := s.micros()
	expiry := expiryOf(charges, receipt.Uncertain(), now)

	sh.mu.Lock()
	defer sh.mu.Unlock()
	now = sh.clock(now)
	var done bool
	switch {
	case sh.voided.Len() > 0 && sh.voided.Has(receipt.ID, now):
		done = true // refunded as an uncertain receipt before
	case receipt.Uncertain():
		done = sh.wasRefunded(receipt.ID, now)
	default:
		// Record the refund now, in the probe that looks for an earlier one;
		// undone below if the guard declines every charge.
		done = !sh.claim(receipt.ID, max(expiry, now+1), now)
	}
	if done {
		for i := range res.Charges {
			res.Charges[i].Outcome = allowance.AlreadyRefunded
		}
		return nil
	}
	if receipt.Uncertain() {
		// This store never leaves a charge uncertain: a charge that returned
		// an error was not applied. Void the ID so it never can be.
		for i := range res.Charges {
			res.Charges[i].Outcome = allowance.NotCharged
		}
		if sh.voided == nil {
			sh.voided = &receiptset.Set{}
		}
		sh.voided.Add(receipt.ID, max(expiry, now+1), now)
		return nil
	}

	id := sh.ids.Lookup(h, receipt.Identity)
	anyDone := false
	for start := 0; start < len(charges); {
		rule := charges[start].Charge.Rule
		end := start + 1
		for end < len(charges) && charges[end].Charge.Rule == rule {
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
			out, units := refundCharge(id, &algo.Ref{ID: receipt.ID, Charge: i}, charges[i].Charge, limits[i], now)
			res.Charges[i].Outcome, res.Charges[i].Restored = out, units
			restoredAny = restoredAny || out == allowance.Restored
		}
		if guard != nil && restoredAny {
			if id == nil {
				id = insertIdentity(&sh.ids, h, receipt.Identity, 1)
			}
			countGuard(id, rule, *guard, now)
		}
		start = end
	}
	if !anyDone {
		sh.unclaim(receipt.ID, now)
	}
	return nil
}

// guarded reports whether guards hold one for rule.
func guarded(guards []allowance.Guard, rule string) bool {
	for i := range guards {
		if guards[i].Rule == rule {
			return true
		}
	}
	return false
}

// refundOne is Refund for the common case, a certain receipt of one charge
// whose rule has no refund guard, with less work under the lock.
func (s *Store) refundOne(receipt *allowance.Receipt, outcomes []allowance.ChargeOutcome) {
	out := &outcomes[0]
	out.Charge = receipt.Charge(0)
	c := &out.Charge
	lim := limitOf(c.Algorithm, c.Limit)
	sh, h := s.locate(receipt.Identity)
	now := s.micros()
	expiry := expiryOf(outcomes, false, now)

	sh.mu.Lock()
	now = sh.clock(now)
	if sh.voided.Len() > 0 && sh.voided.Has(receipt.ID, now) || !sh.claim(receipt.ID, max(expiry, now+1), now) {
		sh.mu.Unlock()
		out.Outcome = allowance.AlreadyRefunded
		return
	}
	id := sh.ids.Lookup(h, receipt.Identity)
	out.Outcome, out.Restored = refundCharge(id, &algo.Ref{ID: receipt.ID}, *c, lim, now)
	sh.mu.Unlock()
}

// expiryOf returns when no charge of a receipt can be restored any more, in
// µs, as Receipt.Expiry does, from charges already at hand.
func expiryOf(charges []allowance.ChargeOutcome, uncertain bool, now int64) int64 {
	var end int64
	for i := range charges {
		c := &charges[i].Charge
		p := c.Limit.Period.Microseconds()
		var e int64
		if uncertain {
			e = now + 2*p
		} else {
			e = algo.Kind(c.Algorithm).Expiry(c.Window, p)
		}
		end = max(end, e)
	}
	return end
}

// refundCharge gives back charge c, ref's, of identity id.
func refundCharge(id *identity, ref *algo.Ref, c allowance.Charge, l algo.Limit, now int64) (allowance.Outcome, int64) {
	k := find(id, c.Rule, c.Limit, limitSlot(c.Algorithm))
	if k < 0 {
		return allowance.WindowEnded, 0
	}
	ok, units := algo.Kind(c.Algorithm).Refund(&id.V.slots[k].state, l, c.Amount, c.Window, now, ref)
	if !ok {
		return allowance.WindowEnded, 0
	}
	return allowance.Restored, units
}

func guardExhausted(id *identity, rule string, g allowance.Limit, now int64) bool {
	k := find(id, rule, g, guardSlot)
	if k < 0 {
		return false
	}
	st := id.V.slots[k].state.Fixed().Roll(g.Period.Microseconds(), now)
	return st.Count >= g.Count
}

func countGuard(id *identity, rule string, g allowance.Limit, now int64) {
	k := find(id, rule, g, guardSlot)
	if k < 0 {
		k = add(id, rule, g, guardSlot)
	}
	sl := &id.V.slots[k]
	p := g.Period.Microseconds()
	st := sl.state.Fixed().Roll(p, now)
	st.Count++
	sl.state.SetFixed(st)
	sl.expires = st.Expiry(p)
}

// Peek reports identity's usage of every limit of rules without charging.
func (s *Store) Peek(ctx context.Context, identityKey string, rules []allowance.Rule) ([]allowance.Usage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: peek: %w", err)
	}
	var out []allowance.Usage
	sh, h := s.locate(identityKey)
	now := s.micros()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now = sh.clock(now)
	id := sh.ids.Lookup(h, identityKey)
	for _, r := range rules {
		for _, l := range r.Limits {
			var st algo.State
			if k := find(id, r.Name, l, limitSlot(r.Algorithm)); k >= 0 {
				st = id.V.slots[k].state
			}
			u := algo.Kind(r.Algorithm).Peek(&st, limitOf(r.Algorithm, l), now)
			out = append(out, allowance.Usage{Rule: r.Name, Limit: l, Algorithm: r.Algorithm, Used: u.Used, Remaining: u.Remaining, ResetAfter: micros(u.ResetAfter)})
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
	sh, h := s.locate(identityKey)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	id := sh.ids.Lookup(h, identityKey)
	if id == nil {
		return nil
	}
	live := id.V.slots[:0]
	for _, sl := range id.V.slots {
		if !inRules(sl, rules) {
			live = append(live, sl)
		}
	}
	clear(id.V.slots[len(live):])
	id.V.slots = live
	if len(live) == 0 {
		sh.ids.Remove(id)
	}
	return nil
}

func inRules(sl slot, rules []allowance.Rule) bool {
	for _, r := range rules {
		if r.Name != sl.rule {
			continue
		}
		if sl.kind.guard {
			return true
		}
		for _, l := range r.Limits {
			if l == sl.limit && sl.kind == limitSlot(r.Algorithm) {
				return true
			}
		}
	}
	return false
}
