// Package redisstore is an allowance.Store kept in Redis, so that several
// processes share one set of limits: a single node, a Sentinel-managed
// primary, or a Redis Cluster.
//
// Every check is one round trip: one Lua script judges and charges all limits
// of all rules of an identity, all or nothing, with the server's clock (TIME),
// so replicas with skewed clocks agree. Every refund is one round trip too: a
// script undoes exactly the receipt's charges and records the receipt id with
// the charge's remaining lifetime, so a refund retried from anywhere happens
// once. The scripts compute exactly what internal/algo computes, in integer
// microseconds.
//
// Keys: every key of an identity carries one hash tag, "<prefix>{<tag>}:...",
// so a check touches one Cluster slot. The tag is the identity in URL-safe
// base64 ("b…") when it has at most 48 bytes, else the base64 of its SHA-256
// ("h…"): user-controlled text cannot leave the tag, collide or grow keys.
// Every key has an expiry. docs/redis.md describes the schema and its memory.
//
// It needs Redis 7.0 or later (or Valkey).
//
// Clients: this package imports none; a Client adapts one. Package
// rueidisstore (Open, OpenCluster, New) adapts rueidis, whose automatic
// pipelining of concurrent commands is what makes a shared Redis fast under
// load; package goredisstore (New) adapts a go-redis UniversalClient (a
// single node, a Sentinel failover client or a Cluster client). A program
// builds only the client it imports.
//
// Receipts are signed (allowance.ReceiptKeys), and a refund of a receipt
// that the store's keys do not verify changes nothing: its outcome is
// allowance.Unverified (counted by Unverified). The keys are those of
// WithReceiptKeys; without it, every store on one Redis and prefix shares a
// random key that the first of them stored in Redis under
// "<prefix>receipt-key" (SET NX), so that processes refund each other's
// receipts with no configuration. docs/redis.md says when to configure keys
// instead (Redis without persistence) and how to rotate them.
//
// Uncertain checks: when a check's round trip fails after the request may
// have reached Redis (a timeout, a connection cut), Charge returns an error
// wrapping allowance.ErrUncertain. Each charge leaves a short-lived trace of
// its windows under its receipt id (see WithTraceTTL); refunding the
// uncertain receipt undoes the charge through the trace when it was applied,
// and otherwise voids the id so that a late charge of it is refused.
package redisstore

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/algo"
)

// DefaultPrefix starts every key unless WithPrefix says otherwise.
const DefaultPrefix = "allowance:"

// DefaultTraceTTL is how long a charge's trace is kept by default.
const DefaultTraceTTL = time.Minute

// maxCharges bounds the limits of one check, as the root package does.
const maxCharges = allowance.MaxRules * allowance.MaxLimitsPerRule

// Store is an allowance.Store in Redis. It is safe for concurrent use.
type Store struct {
	c        client
	prefix   string
	now      func() time.Time
	traceTTL string // µs, for the charge script

	keys       atomic.Pointer[allowance.ReceiptKeys] // nil until loaded from Redis
	keysMu     sync.Mutex                            // held while loading them
	unverified atomic.Uint64                         // refunds refused as unverified
}

var _ allowance.Store = (*Store)(nil)

type config struct {
	prefix   string
	now      func() time.Time
	traceTTL time.Duration
	keys     *allowance.ReceiptKeys
	keysSet  bool
}

// Option configures a Store.
type Option func(*config)

// WithPrefix sets the prefix of every key (default "allowance:"), so that
// several applications can share a Redis. It may not contain '{' or '}',
// which would change the keys' hash tag.
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithClock makes the store's scripts use now instead of the Redis server's
// TIME. For tests that step a fake clock through windows; in production the
// server's clock keeps every replica in agreement.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithTraceTTL sets how long a charge's trace is kept (default one minute,
// never longer than the charge's own lifetime): the time within which an
// uncertain check can be refunded exactly. A later refund of an uncertain
// receipt finds no trace and reports NotCharged even when the charge was
// made. Each trace is one small key per allowed check (see docs/redis.md);
// zero writes none, which makes every uncertain refund a void.
func WithTraceTTL(d time.Duration) Option { return func(c *config) { c.traceTTL = d } }

// WithReceiptKeys makes the store sign receipts with keys' first key and
// refund only receipts that one of keys verifies, instead of with the key
// shared through Redis. Every process that refunds another's receipts needs
// the same keys; rotate them as allowance.ReceiptKeys says. Configure them
// when Redis may lose the shared key: a Redis without persistence, a flush.
// nil is an error.
func WithReceiptKeys(keys *allowance.ReceiptKeys) Option {
	return func(c *config) { c.keys, c.keysSet = keys, true }
}

// receiptKeyName is the key, after the prefix, of the receipt key shared
// through Redis: no identity's keys, which start "{", can meet it.
const receiptKeyName = "receipt-key"

func newStore(c client, opts []Option) (*Store, error) {
	cfg := config{prefix: DefaultPrefix, traceTTL: DefaultTraceTTL}
	for _, o := range opts {
		o(&cfg)
	}
	if strings.ContainsAny(cfg.prefix, "{}") {
		return nil, fmt.Errorf("redisstore: prefix %q contains '{' or '}'; expected none, as they would change the keys' hash tag", cfg.prefix)
	}
	if cfg.traceTTL < 0 {
		return nil, fmt.Errorf("redisstore: trace TTL %v is negative; expected zero or more", cfg.traceTTL)
	}
	if cfg.keysSet && cfg.keys == nil {
		return nil, errors.New("redisstore: receipt keys are nil; expected keys from allowance.NewReceiptKeys, or no WithReceiptKeys for the key shared through Redis")
	}
	s := &Store{c: c, prefix: cfg.prefix, now: cfg.now, traceTTL: strconv.FormatInt(cfg.traceTTL.Microseconds(), 10)}
	if cfg.keys != nil {
		s.keys.Store(cfg.keys)
	}
	return s, nil
}

// receiptKeys returns the store's keys: those of WithReceiptKeys, or the key
// shared through Redis, read (or created) on first use.
func (s *Store) receiptKeys(ctx context.Context) (*allowance.ReceiptKeys, error) {
	if k := s.keys.Load(); k != nil {
		return k, nil
	}
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if k := s.keys.Load(); k != nil {
		return k, nil
	}
	// The first store on this Redis and prefix stores a random key; every
	// other store reads it: one command, atomic, on whichever node holds
	// the key's slot.
	var fresh [32]byte
	crand.Read(fresh[:])
	name := s.prefix + receiptKeyName
	v, err := s.c.setNXGet(ctx, name, hex.EncodeToString(fresh[:]))
	if err != nil {
		return nil, fmt.Errorf("read the receipt key %q: %w", name, err)
	}
	key, err := hex.DecodeString(v)
	if err == nil && len(key) < allowance.MinReceiptKeyLen {
		err = fmt.Errorf("%d bytes; expected at least %d", len(key), allowance.MinReceiptKeyLen)
	}
	if err != nil {
		return nil, fmt.Errorf("the receipt key in Redis at %q is not a key of hex digits: %w; delete it to make a new one (receipts signed with the old one will no longer refund), or configure keys with WithReceiptKeys", name, err)
	}
	k, err := allowance.NewReceiptKeys(key)
	if err != nil {
		return nil, fmt.Errorf("the receipt key in Redis at %q: %w", name, err)
	}
	s.keys.Store(k)
	return k, nil
}

// Unverified returns the number of refunds this Store refused since it was
// made because its keys did not verify the receipt (allowance.Unverified):
// altered or forged receipts, receipts signed under a key it no longer
// lists, or receipts encoded before receipts were signed. Worth an alert.
func (s *Store) Unverified() uint64 { return s.unverified.Load() }

// Close closes the client when the Store made it (rueidisstore.Open,
// rueidisstore.OpenCluster).
func (s *Store) Close() error {
	s.c.close()
	return nil
}

// Ping checks that Redis answers and, without WithReceiptKeys, that the
// store has the receipt key shared through Redis (reading or creating it the
// first time), so that a store made by New (or rueidisstore.New or
// goredisstore.New) can be made ready before its first check.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.c.ping(ctx); err != nil {
		return fmt.Errorf("redisstore: ping: %w", err)
	}
	if _, err := s.receiptKeys(ctx); err != nil {
		return fmt.Errorf("redisstore: ping: %w", err)
	}
	return nil
}

// clockArg is the scripts' time argument: the test clock in µs, or "" for
// the server's TIME.
func (s *Store) clockArg() string {
	if s.now == nil {
		return ""
	}
	return strconv.FormatInt(s.now().UnixMicro(), 10)
}

func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

// Charge charges req.Identity against every limit of req.Rules in one
// script, all or nothing.
func (s *Store) Charge(ctx context.Context, req allowance.Request, d *allowance.Decision) error {
	if err := ctx.Err(); err != nil {
		d.Reset(req)
		return fmt.Errorf("redisstore: charge: %w", err)
	}
	rk, err := s.receiptKeys(ctx)
	if err != nil {
		d.Reset(req)
		return fmt.Errorf("redisstore: charge: %w", err)
	}
	if req.ID.IsZero() {
		// Chosen here, before the round trip, so that an uncertain charge
		// can be voided by it.
		req.ID = allowance.NewReceiptID()
	}
	d.Reset(req)
	m := 0
	for i := range req.Rules {
		m += len(req.Rules[i].Limits)
	}
	if m == 0 || m > maxCharges {
		return fmt.Errorf("redisstore: charge: %d limits; expected 1 to %d", m, maxCharges)
	}
	base := s.identityBase(req.Identity)
	keys := make([]string, 0, 2+2*m)
	args := make([]string, 0, 5+4*m)
	keys = append(keys, receiptKey(base, req.ID))
	args = append(args, s.clockArg(), req.ID.String(), s.traceTTL)
	var longest time.Duration
	for i := range req.Rules {
		r := &req.Rules[i]
		amount := strconv.FormatInt(req.Amount(i), 10)
		keys = ruleKeys(keys, base, r)
		for j, l := range r.Limits {
			args = append(args, limitCode(r, j), strconv.FormatInt(l.Count, 10), strconv.FormatInt(l.Period.Microseconds(), 10), amount)
			longest = max(longest, l.Period)
		}
	}
	if req.IdempotencyKey != "" {
		// The record's key, its lifetime and the costs a repeat's receipt
		// must carry, last (see charge.lua).
		keys = append(keys, recordKey(base, &req))
		args = append(args, strconv.FormatInt(longest.Microseconds(), 10), recordCosts(&req))
	}
	reply, err := s.c.evalText(ctx, scriptCharge, keys, args)
	if err != nil {
		if s.c.mayHaveApplied(err) {
			d.Receipt = allowance.UncertainReceipt(req)
			rk.Sign(&d.Receipt)
			return fmt.Errorf("redisstore: charge %s: %w: %w", req.ID, allowance.ErrUncertain, err)
		}
		return fmt.Errorf("redisstore: charge %s: %w", req.ID, err)
	}
	code, err := parseReply(reply, req, m, d)
	switch {
	case err != nil:
		// The script ran, and may have charged: the reply cannot say.
		// The uncertain receipt voids the charge, or refunds it through
		// its trace.
		d.Reset(req)
		d.Receipt = allowance.UncertainReceipt(req)
		rk.Sign(&d.Receipt)
		return fmt.Errorf("redisstore: charge %s: %w: %w", req.ID, allowance.ErrUncertain, err)
	case code == replyVoided:
		return fmt.Errorf("redisstore: charge %s: %w", req.ID, allowance.ErrVoided)
	case code == replyCharged:
		// A client retried the request after losing its connection: the
		// first attempt charged, and its verdict is lost.
		d.Receipt = allowance.UncertainReceipt(req)
		rk.Sign(&d.Receipt)
		return fmt.Errorf("redisstore: charge %s: %w: the id was charged by an earlier attempt of this request", req.ID, allowance.ErrUncertain)
	}
	rk.Sign(&d.Receipt) // a denial's receipt has no charges: left unsigned
	return nil
}

// Refund undoes receipt's charges in one script, at most once per receipt
// id. An uncertain receipt is refunded through the trace its charge left, or
// voided when there is none. A receipt that the store's keys do not verify
// is refused before anything is sent: every outcome is
// allowance.Unverified.
func (s *Store) Refund(ctx context.Context, receipt *allowance.Receipt, guards []allowance.Guard, res *allowance.RefundResult) error {
	res.Reset(receipt.ID, 0)
	if receipt.Len() == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisstore: refund %s: %w", receipt.ID, err)
	}
	rk, err := s.receiptKeys(ctx)
	if err != nil {
		return fmt.Errorf("redisstore: refund %s: %w", receipt.ID, err)
	}
	if !rk.Verify(receipt) {
		res.SetUnverified(receipt)
		s.unverified.Add(1)
		return nil
	}
	charges := receipt.Charges()
	m := len(charges)
	base := s.identityBase(receipt.Identity)
	keys := make([]string, 0, 1+2*m+len(guards))
	args := make([]string, 0, 6+8*m)
	keys = append(keys, receiptKey(base, receipt.ID))
	uncertain := "0"
	if receipt.Uncertain() {
		uncertain = "1"
	}
	var maxP int64
	for _, c := range charges {
		maxP = max(maxP, c.Limit.Period.Microseconds())
	}
	// ruleEnd returns the end of the charges of the rule whose first charge
	// is start: a receipt's charges of one rule are consecutive.
	ruleEnd := func(start int) int {
		end := start + 1
		for end < m && charges[end].Rule == charges[start].Rule {
			end++
		}
		return end
	}
	// The void mark outlives any charge the voided id could still make.
	args = append(args, s.clockArg(), receipt.ID.String(), uncertain, strconv.FormatInt(2*maxP, 10), strconv.Itoa(m), "0")
	for start := 0; start < m; {
		end := ruleEnd(start)
		sh := shared(charges[start].Algorithm, end-start)
		for i, c := range charges[start:end] {
			// GCRA needs only the emission interval of its limit, sent in
			// place of the period: the script parses no number it can do
			// without.
			x := c.Limit.Period.Microseconds()
			if c.Algorithm == allowance.GCRA {
				x = algo.EmissionInterval(c.Limit.Count, x)
			}
			code := algCode(c.Algorithm)
			if sh && i > 0 {
				code = contCode(c.Algorithm)
			}
			args = append(args, code, strconv.FormatInt(x, 10), strconv.FormatInt(c.Amount, 10), strconv.FormatInt(c.Window, 10))
		}
		start = end
	}
	// Per rule (its charges are consecutive): its guard key, if it has a
	// guard, then its charges' keys, in the order the script reads them.
	// The rules are sent only when one has a guard; without, the script
	// refunds every charge as one rule's.
	groups := 0
	guarded := false
	for start := 0; start < m; {
		end := ruleEnd(start)
		gn, gp := "0", "0"
		for _, g := range guards {
			if g.Rule == charges[start].Rule && g.Limit.Count > 0 && g.Limit.Period > 0 {
				gn, gp = strconv.FormatInt(g.Limit.Count, 10), strconv.FormatInt(g.Limit.Period.Microseconds(), 10)
				keys = append(keys, guardKey(base, g.Rule))
				guarded = true
				break
			}
		}
		if c := charges[start]; shared(c.Algorithm, end-start) {
			limits := make([]allowance.Limit, end-start)
			for i := range limits {
				limits[i] = charges[start+i].Limit
			}
			keys = append(keys, ruleKey(base, c.Rule, c.Algorithm, limits))
		} else {
			for _, c := range charges[start:end] {
				k := limitKey(base, c.Rule, c.Algorithm, c.Limit)
				keys = append(keys, k)
				if c.Algorithm == allowance.SlidingLog {
					keys = append(keys, k+":t")
				}
			}
		}
		args = append(args, strconv.Itoa(start+1), strconv.Itoa(end), gn, gp)
		groups++
		start = end
	}
	if guarded {
		args[5] = strconv.Itoa(groups)
	} else {
		args = args[:6+4*m]
	}
	reply, err := s.c.evalText(ctx, scriptRefund, keys, args)
	if err != nil {
		return fmt.Errorf("redisstore: refund %s: %w", receipt.ID, err)
	}
	res.Reset(receipt.ID, m)
	if err := parseRefund(reply, charges, res.Charges); err != nil {
		// The script ran and may have refunded; a retry of the refund is
		// safe (at most once per receipt id) and reports AlreadyRefunded.
		res.Reset(receipt.ID, 0)
		return fmt.Errorf("redisstore: refund %s: %w", receipt.ID, err)
	}
	return nil
}

// Peek reports identity's usage of every limit of rules, in one read-only
// script.
func (s *Store) Peek(ctx context.Context, identity string, rules []allowance.Rule) ([]allowance.Usage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("redisstore: peek: %w", err)
	}
	m := 0
	for i := range rules {
		m += len(rules[i].Limits)
	}
	if m == 0 {
		return nil, nil
	}
	base := s.identityBase(identity)
	keys := make([]string, 0, 2*m)
	args := make([]string, 0, 2+3*m)
	args = append(args, s.clockArg(), strconv.Itoa(m))
	for i := range rules {
		r := &rules[i]
		keys = ruleKeys(keys, base, r)
		for j, l := range r.Limits {
			args = append(args, limitCode(r, j), strconv.FormatInt(l.Count, 10), strconv.FormatInt(l.Period.Microseconds(), 10))
		}
	}
	vals, err := s.c.eval(ctx, scriptPeek, keys, args)
	if err != nil {
		return nil, fmt.Errorf("redisstore: peek: %w", err)
	}
	if len(vals) != 3*m {
		return nil, fmt.Errorf("redisstore: peek: script returned %d values; expected %d", len(vals), 3*m)
	}
	out := make([]allowance.Usage, 0, m)
	i := 0
	for _, r := range rules {
		for _, l := range r.Limits {
			out = append(out, allowance.Usage{Rule: r.Name, Limit: l, Algorithm: r.Algorithm, Used: vals[3*i], Remaining: vals[3*i+1], ResetAfter: micros(vals[3*i+2])})
			i++
		}
	}
	return out, nil
}

// Reset deletes identity's keys for every limit of rules and the rules'
// refund guard counters, in one command.
func (s *Store) Reset(ctx context.Context, identity string, rules []allowance.Rule) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisstore: reset: %w", err)
	}
	if len(rules) == 0 {
		return nil
	}
	base := s.identityBase(identity)
	var keys []string
	for _, r := range rules {
		if shared(r.Algorithm, len(r.Limits)) {
			keys = append(keys, ruleKey(base, r.Name, r.Algorithm, r.Limits))
		}
		// Every limit's own key too: a rule's limits had keys of their own
		// before they shared one.
		for _, l := range r.Limits {
			k := limitKey(base, r.Name, r.Algorithm, l)
			keys = append(keys, k)
			if r.Algorithm == allowance.SlidingLog {
				keys = append(keys, k+":t")
			}
		}
		keys = append(keys, guardKey(base, r.Name))
	}
	if err := s.c.del(ctx, keys); err != nil {
		return fmt.Errorf("redisstore: reset: %w", err)
	}
	return nil
}
