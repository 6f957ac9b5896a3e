package memstore

import (
	"strconv"
	"strings"
	"sync"

	"github.com/allowancehq/allowance"
)

// idempotency holds the records of idempotent charges
// (allowance.Request.IdempotencyKey), in shards of their own, apart from
// the usage shards, so that plain checks pay nothing for them. A shard's
// lock is held across the whole of an idempotent charge: concurrent
// repeats of one key are charged once.
type idempotency struct {
	shards []idemShard
}

type idemShard struct {
	mu      sync.Mutex
	records map[string]idemRecord
}

// idemRecord is an allowed charge, kept until expires (µs): the longest
// period of its rules after it was made.
type idemRecord struct {
	d       allowance.Decision
	expires int64
}

// idemKey is what identifies an idempotent charge: the identity, the
// rules (names, algorithms and limits, in order) and the key. Rule names
// hold no NUL, and every part is length-prefixed or fixed, so no two
// requests share a key.
func idemKey(req *allowance.Request) string {
	var b strings.Builder
	b.Grow(len(req.Identity) + len(req.IdempotencyKey) + 32*len(req.Rules))
	b.WriteString(strconv.Itoa(len(req.Identity)))
	b.WriteByte(':')
	b.WriteString(req.Identity)
	for i := range req.Rules {
		r := &req.Rules[i]
		b.WriteByte(0)
		b.WriteString(r.Name)
		b.WriteByte(0)
		b.WriteString(r.Algorithm.String())
		for _, l := range r.Limits {
			b.WriteByte(0)
			b.WriteString(strconv.FormatInt(l.Count, 10))
			b.WriteByte('/')
			b.WriteString(strconv.FormatInt(int64(l.Period), 10))
		}
	}
	b.WriteByte(1)
	b.WriteString(req.IdempotencyKey)
	return b.String()
}

// longestPeriod is the longest period of req's limits, in µs.
func longestPeriod(req *allowance.Request) int64 {
	var p int64
	for i := range req.Rules {
		for _, l := range req.Rules[i].Limits {
			p = max(p, l.Period.Microseconds())
		}
	}
	return p
}

// chargeIdempotent is Charge for a request with an idempotency key: the
// recorded Decision of an earlier allowed charge of the same identity,
// rules and key, unless that charge was refunded since; else a charge, which
// is recorded when allowed.
func (s *Store) chargeIdempotent(req allowance.Request, d *allowance.Decision) error {
	key := idemKey(&req)
	sh, h := s.locate(req.Identity)
	is := &s.idem.shards[h>>32&s.mask]
	is.mu.Lock()
	defer is.mu.Unlock()
	now := s.micros()
	if rec, ok := is.records[key]; ok && rec.expires > now {
		sh.mu.Lock()
		now = sh.clock(now)
		given := sh.wasRefunded(rec.d.Receipt.ID, now)
		sh.mu.Unlock()
		if !given {
			*d = rec.d
			d.Repeated = true
			return nil
		}
	}
	if err := s.charge(req, d); err != nil || !d.Allowed {
		return err
	}
	if is.records == nil {
		is.records = make(map[string]idemRecord)
	}
	is.records[key] = idemRecord{d: *d, expires: now + longestPeriod(&req)}
	return nil
}

// sweepIdempotency drops the records that have expired.
func (s *Store) sweepIdempotency() {
	for i := range s.idem.shards {
		is := &s.idem.shards[i]
		now := s.micros()
		is.mu.Lock()
		for k, rec := range is.records {
			if rec.expires <= now {
				delete(is.records, k)
			}
		}
		is.mu.Unlock()
	}
}

// idempotencyRecords returns the number of idempotency records held.
func (s *Store) idempotencyRecords() (n int) {
	for i := range s.idem.shards {
		is := &s.idem.shards[i]
		is.mu.Lock()
		n += len(is.records)
		is.mu.Unlock()
	}
	return n
}
