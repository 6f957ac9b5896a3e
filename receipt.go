package allowance

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/allowancehq/allowance/internal/algo"
	"github.com/allowancehq/allowance/internal/siphash"
)

// ReceiptID identifies one charge, unique among the charges of a store: 128
// random bits from NewReceiptID, or an id the store chose (memstore counts
// them). Ids are unique, not secret: a refund needs the whole receipt.
type ReceiptID [16]byte

// NewReceiptID returns a random ReceiptID. It does not allocate.
func NewReceiptID() ReceiptID {
	var id ReceiptID
	binary.LittleEndian.PutUint64(id[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(id[8:], rand.Uint64())
	return id
}

// String returns the ID as 32 lowercase hex digits.
func (id ReceiptID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID, which no charge has.
func (id ReceiptID) IsZero() bool { return id == ReceiptID{} }

// ParseReceiptID parses the 32 hex digits of ReceiptID.String.
func ParseReceiptID(s string) (ReceiptID, error) {
	var id ReceiptID
	if len(s) != 32 {
		return id, fmt.Errorf("receipt id %q: expected 32 hex digits, got %d characters", s, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("receipt id %q: expected 32 hex digits: %w", s, err)
	}
	return id, nil
}

// Charge is one limit's part of a receipt: what was charged and what the
// refund needs to find the same charge again.
type Charge struct {
	Rule      string
	Limit     Limit
	Algorithm Algorithm
	// Amount is the number of units charged.
	Amount int64
	// Window locates the charge, in microseconds of the store's clock: the
	// window start for FixedWindow and SlidingWindow, the time of the charge
	// for SlidingLog, the TAT right after the charge for GCRA.
	Window int64
}

// Receipt records exactly what one allowed check charged, so that it can be
// given back: the identity, and per limit the rule, the limit, the algorithm,
// the amount and where the charge was made. A Receipt encodes to bytes
// (MarshalBinary) so that it can be stored with a task and refunded later by
// another process.
//
// An uncertain receipt comes from a check that failed with ErrUncertain: the
// store may or may not have applied the charge. Refunding it undoes the charge
// if it was made, and otherwise voids its ID so that it can never be applied;
// exactly once either way.
//
// A store signs every receipt it returns (see ReceiptKeys), and refunds only
// receipts its keys verify. A receipt in memory is signed by reference: it
// records the keys that signed it and its ID and Identity as they were then,
// so that signing costs a check a few word copies, and a receipt whose ID or
// Identity was changed afterwards no longer verifies. The tag itself is
// computed when the receipt leaves memory (MarshalBinary); a decoded receipt
// is verified by its tag. The rest of a receipt cannot be changed, except
// through its rules, which it shares with the Limiter or Request that made
// it: they must not be modified (see Request.Rules).
//
// The zero Receipt has no charges; refunding it does nothing.
type Receipt struct {
	ID       ReceiptID
	Identity string

	rules []Rule // rules charged, in order; shared with the Limiter, never modified
	// costs are the request's own costs of the first rules (Request.Cost
	// and Costs), 0 for a rule's own; moreCosts those of the rules after,
	// when any is set.
	costs     [maxInlineCosts]int64
	moreCosts *[]int64
	uncertain bool
	charged   bool  // the windows describe applied charges
	tagged    bool  // decoded with a tag, which seal holds
	n         uint8 // number of windows set (at most MaxRules*MaxLimitsPerRule)
	inline    [maxInline]int64
	more      *[]int64 // windows beyond the inline ones

	// signer signed the receipt in memory (ReceiptKeys.Sign), when its ID
	// and Identity were seal and signedIdentity: its tag is that of its
	// content with those, under signer's first key, computed when needed.
	signer         *ReceiptKeys
	signedIdentity string
	// seal is, when tagged, the tag as encoded; when signer is set, the ID
	// the receipt was signed with. One field for the two, never needed
	// together, keeps a Decision, which a check copies, shorter.
	seal [16]byte
}

func (r *Receipt) setWindow(i int, w int64) {
	if i < maxInline {
		r.inline[i] = w
	} else {
		if r.more == nil {
			r.more = new([]int64)
		}
		for len(*r.more) <= i-maxInline {
			*r.more = append(*r.more, 0)
		}
		(*r.more)[i-maxInline] = w
	}
	if i >= int(r.n) {
		r.n = uint8(i + 1)
	}
}

func (r *Receipt) window(i int) int64 {
	if i < maxInline {
		return r.inline[i]
	}
	return (*r.more)[i-maxInline]
}

// ruleLimit returns the rule, its index and the limit of the i-th limit of
// the rules.
func (r *Receipt) ruleLimit(i int) (*Rule, int, Limit) {
	for k := range r.rules {
		rule := &r.rules[k]
		if i < len(rule.Limits) {
			return rule, k, rule.Limits[i]
		}
		i -= len(rule.Limits)
	}
	panic(fmt.Sprintf("allowance: limit index %d out of range", i))
}

// Len returns the number of charges: one per limit of every rule charged, and
// zero for the receipt of a denied check.
func (r *Receipt) Len() int {
	if !r.charged && !r.uncertain {
		return 0
	}
	return int(r.n)
}

// Charge returns the i-th charge, 0 <= i < Len().
func (r *Receipt) Charge(i int) Charge {
	rule, k, l := r.ruleLimit(i)
	return Charge{Rule: rule.Name, Limit: l, Algorithm: rule.Algorithm, Amount: r.amount(k), Window: r.window(i)}
}

// maxInlineCosts is how many rules' own costs a receipt holds without
// allocating.
const maxInlineCosts = 2

// setCosts records the costs req sets for its rules.
func (r *Receipt) setCosts(req *Request) {
	if req.Cost == 0 && req.Costs == nil {
		return
	}
	for k := range req.Rules {
		c := req.cost(k)
		if k < maxInlineCosts {
			r.costs[k] = c
			continue
		}
		if c == 0 && r.moreCosts == nil {
			continue
		}
		if r.moreCosts == nil {
			more := make([]int64, len(req.Rules)-maxInlineCosts)
			r.moreCosts = &more
		}
		(*r.moreCosts)[k-maxInlineCosts] = c
	}
}

// amount returns what the receipt charged each limit of its k-th rule.
func (r *Receipt) amount(k int) int64 {
	var c int64
	if k < maxInlineCosts {
		c = r.costs[k]
	} else if r.moreCosts != nil {
		c = (*r.moreCosts)[k-maxInlineCosts]
	}
	if c != 0 {
		return c
	}
	return r.rules[k].Amount()
}

// Charges returns every charge of the receipt.
func (r *Receipt) Charges() []Charge {
	out := make([]Charge, r.Len())
	for i := range out {
		out[i] = r.Charge(i)
	}
	return out
}

// Rules returns the rules the receipt charged. The slice must not be
// modified. What each limit was charged is in Charges: a request may carry
// its own cost in place of a rule's Cost (Limiter.CheckN).
func (r *Receipt) Rules() []Rule { return r.rules }

// Uncertain reports whether the receipt comes from a check whose outcome is
// unknown. Its charges have no windows; the store finds them by the ID.
func (r *Receipt) Uncertain() bool { return r.uncertain }

// Signed reports whether the receipt is signed (see ReceiptKeys): by
// ReceiptKeys.Sign in this process, or decoded from an encoding with a tag.
// It says nothing of whether the signature is valid: only the keys of the
// store that signed it can tell.
func (r *Receipt) Signed() bool { return r.tagged || r.signer != nil }

// Expiry returns the time after which no charge of r can be refunded any more
// (every window has ended), given the receipt's windows; for an uncertain
// receipt, the latest such time counted from now.
func (r *Receipt) Expiry(now time.Time) time.Time {
	var end int64
	for i := 0; i < r.Len(); i++ {
		c := r.Charge(i)
		p := c.Limit.Period.Microseconds()
		var e int64
		if r.uncertain {
			e = now.UnixMicro() + 2*p
		} else {
			e = algo.Kind(c.Algorithm).Expiry(c.Window, p)
		}
		end = max(end, e)
	}
	return time.UnixMicro(end)
}

// NewReceipt builds a receipt from charges, as a test needs it: charges of
// one rule must be adjacent and agree on the rule's algorithm and amount.
// The receipt is not signed, so no store refunds it (the outcome is
// Unverified) unless it is signed with the store's key (ReceiptKeys.Sign).
// Most code gets receipts from Decision or UnmarshalBinary instead.
func NewReceipt(id ReceiptID, identity string, charges []Charge) (Receipt, error) {
	r := Receipt{ID: id, Identity: identity}
	if len(charges) == 0 {
		return r, errors.New("receipt has no charges")
	}
	if len(charges) > MaxRules*MaxLimitsPerRule {
		return r, fmt.Errorf("receipt has %d charges; at most %d are allowed", len(charges), MaxRules*MaxLimitsPerRule)
	}
	var rules []Rule
	for i, c := range charges {
		if err := validateRuleName(c.Rule); err != nil {
			return r, fmt.Errorf("charge %d: %w", i, err)
		}
		if err := c.Limit.Validate(); err != nil {
			return r, fmt.Errorf("charge %d: limit: %w", i, err)
		}
		if !c.Algorithm.Valid() {
			return r, fmt.Errorf("charge %d: unknown algorithm %d", i, uint8(c.Algorithm))
		}
		if c.Amount <= 0 || c.Amount > c.Limit.Count {
			return r, fmt.Errorf("charge %d: amount %d must be between 1 and the limit's count %d", i, c.Amount, c.Limit.Count)
		}
		if c.Window < 0 || c.Window > maxWindow {
			return r, fmt.Errorf("charge %d: window %d is out of range", i, c.Window)
		}
		if n := len(rules); n > 0 && rules[n-1].Name == c.Rule {
			last := &rules[n-1]
			if last.Algorithm != c.Algorithm || last.Amount() != c.Amount {
				return r, fmt.Errorf("charge %d: rule %q: algorithm or amount differs from its other charges", i, c.Rule)
			}
			if len(last.Limits) == MaxLimitsPerRule {
				return r, fmt.Errorf("charge %d: rule %q has more than %d limits", i, c.Rule, MaxLimitsPerRule)
			}
			for _, l := range last.Limits {
				if l == c.Limit {
					return r, fmt.Errorf("charge %d: rule %q: limit %q is charged twice", i, c.Rule, c.Limit)
				}
			}
			last.Limits = append(last.Limits, c.Limit)
		} else {
			for _, prev := range rules {
				if prev.Name == c.Rule {
					return r, fmt.Errorf("charge %d: rule %q: its charges are not adjacent", i, c.Rule)
				}
			}
			rules = append(rules, Rule{Name: c.Rule, Limits: Limits{c.Limit}, Algorithm: c.Algorithm, Cost: c.Amount})
		}
	}
	r.rules = rules
	r.charged = true
	for i, c := range charges {
		r.setWindow(i, c.Window)
	}
	return r, nil
}

// maxWindow bounds a charge's window: year 9999 in microseconds since 1970.
const maxWindow = 253402300799 * 1_000_000

// UncertainReceipt returns the receipt of a charge whose outcome is unknown:
// its ID, identity and rules, no windows. Refunding it voids the charge, once
// the store's key has signed it (ReceiptKeys.Sign): a Store signs the
// uncertain receipts it returns, and the Limiter returns one with a check
// that failed with ErrUncertain. Unsigned, it is refused as Unverified.
func UncertainReceipt(req Request) Receipt {
	r := Receipt{ID: req.ID, Identity: req.Identity, rules: req.Rules, uncertain: true}
	r.setCosts(&req)
	n := 0
	for _, rule := range req.Rules {
		n += len(rule.Limits)
	}
	for i := 0; i < n; i++ {
		r.setWindow(i, 0)
	}
	return r
}

// Binary format, versions 1 and 2 (all integers unsigned varints unless
// said):
//
//	byte    version: 1 unsigned, 2 signed
//	byte    flags (bit 0: uncertain; other bits must be 0)
//	[16]    receipt id
//	uvarint identity length, then the identity's bytes
//	uvarint number of charges (1 to MaxRules*MaxLimitsPerRule)
//	per charge:
//	  uvarint rule name length, then the name
//	  uvarint limit count, uvarint period in seconds
//	  byte    algorithm
//	  uvarint amount
//	  uvarint window
//	version 2 only:
//	[16]    tag: SipHash-2-4-128 of every byte before it, under the
//	        signing store's key, as two little-endian uint64s
//
// A signed receipt encodes as version 2 (one signed in memory gets its tag
// computed then), an unsigned one (built with
// NewReceipt or UncertainReceipt, or decoded from version 1) as version 1,
// so that a receipt decodes and encodes again to the same bytes. Version 1 is
// what every receipt encoded to before receipts were signed: it still
// decodes, unsigned, and no store refunds it.
//
// The decoder is strict: it rejects unknown versions and flags, values out of
// range, non-minimal varints, trailing bytes, and receipts that NewReceipt
// would reject. It does not check the tag, which needs the store's keys:
// Store.Refund does.
const (
	receiptVersion       = 1
	signedReceiptVersion = 2
)

// tagLen is the length of a signed receipt's tag.
const tagLen = 16

// maxIdentity bounds the identity in an encoded receipt.
const maxIdentity = 64 << 10

// MarshalBinary encodes the receipt in the versioned binary format above. A
// receipt signed in memory gets its tag here: that of its content as it was
// signed, so that a receipt whose ID or Identity was changed since encodes
// with a tag that does not verify, as one changed after decoding does.
func (r *Receipt) MarshalBinary() ([]byte, error) {
	if r.Len() == 0 {
		return nil, errors.New("marshal receipt: no charges")
	}
	if len(r.Identity) > maxIdentity {
		return nil, fmt.Errorf("marshal receipt: identity is %d bytes; at most %d are allowed", len(r.Identity), maxIdentity)
	}
	v := byte(receiptVersion)
	if r.Signed() {
		v = signedReceiptVersion
	}
	b := r.appendContent(make([]byte, 0, 32+tagLen+len(r.Identity)+int(r.n)*32), v, r.ID, r.Identity)
	switch {
	case r.signer != nil:
		key := r.signer.keys[0]
		var lo, hi uint64
		if r.ID == r.seal && r.Identity == r.signedIdentity {
			lo, hi = siphash.Sum128(key[0], key[1], b)
		} else {
			lo, hi = r.mac(key, r.seal, r.signedIdentity)
		}
		b = binary.LittleEndian.AppendUint64(b, lo)
		b = binary.LittleEndian.AppendUint64(b, hi)
	case r.tagged:
		b = append(b, r.seal[:]...)
	}
	return b, nil
}

// UnmarshalBinary decodes a receipt encoded by MarshalBinary. On error r is
// left unchanged.
func (r *Receipt) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	v, err := d.byte("version")
	if err != nil {
		return err
	}
	if v != receiptVersion && v != signedReceiptVersion {
		return fmt.Errorf("decode receipt: unknown version %d; expected %d or %d", v, receiptVersion, signedReceiptVersion)
	}
	flags, err := d.byte("flags")
	if err != nil {
		return err
	}
	if flags&^1 != 0 {
		return fmt.Errorf("decode receipt: unknown flags %#x", flags)
	}
	var id ReceiptID
	if err := d.bytes(id[:], "receipt id"); err != nil {
		return err
	}
	identity, err := d.string(maxIdentity, "identity")
	if err != nil {
		return err
	}
	n, err := d.uvarint(MaxRules*MaxLimitsPerRule, "number of charges")
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("decode receipt: no charges")
	}
	charges := make([]Charge, n)
	for i := range charges {
		c := &charges[i]
		if c.Rule, err = d.string(maxRuleName, "rule name"); err != nil {
			return err
		}
		count, err := d.uvarint(MaxCount, "limit count")
		if err != nil {
			return err
		}
		secs, err := d.uvarint(uint64(MaxPeriod/time.Second), "limit period")
		if err != nil {
			return err
		}
		c.Limit = Limit{Count: int64(count), Period: time.Duration(secs) * time.Second}
		alg, err := d.byte("algorithm")
		if err != nil {
			return err
		}
		c.Algorithm = Algorithm(alg)
		amount, err := d.uvarint(MaxCount, "amount")
		if err != nil {
			return err
		}
		c.Amount = int64(amount)
		w, err := d.uvarint(maxWindow, "window")
		if err != nil {
			return err
		}
		c.Window = int64(w)
	}
	var tag [tagLen]byte
	if v == signedReceiptVersion {
		if err := d.bytes(tag[:], "tag"); err != nil {
			return err
		}
	}
	if len(d.b) != 0 {
		return fmt.Errorf("decode receipt: %d unexpected bytes after the last charge", len(d.b))
	}
	out, err := NewReceipt(id, identity, charges)
	if err != nil {
		return fmt.Errorf("decode receipt: %w", err)
	}
	out.uncertain = flags&1 != 0
	if v == signedReceiptVersion {
		out.tagged, out.seal = true, tag
	}
	*r = out
	return nil
}

type decoder struct{ b []byte }

func (d *decoder) byte(what string) (byte, error) {
	if len(d.b) < 1 {
		return 0, fmt.Errorf("decode receipt: truncated before the %s", what)
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c, nil
}

func (d *decoder) bytes(dst []byte, what string) error {
	if len(d.b) < len(dst) {
		return fmt.Errorf("decode receipt: truncated in the %s", what)
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
	return nil
}

func (d *decoder) uvarint(limit uint64, what string) (uint64, error) {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		return 0, fmt.Errorf("decode receipt: bad or truncated varint in the %s", what)
	}
	if n != len(binary.AppendUvarint(nil, v)) {
		return 0, fmt.Errorf("decode receipt: non-minimal varint in the %s", what)
	}
	if v > limit {
		return 0, fmt.Errorf("decode receipt: %s %d is larger than the maximum %d", what, v, limit)
	}
	d.b = d.b[n:]
	return v, nil
}

func (d *decoder) string(limit int, what string) (string, error) {
	n, err := d.uvarint(uint64(limit), what+" length")
	if err != nil {
		return "", err
	}
	if uint64(len(d.b)) < n {
		return "", fmt.Errorf("decode receipt: truncated in the %s", what)
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s, nil
}

// MinReceiptKeyLen is the least length of a receipt key, in bytes: 128
// bits, SipHash's key size. Longer keys are hashed down to it.
const MinReceiptKeyLen = 16

// ReceiptKeys sign and verify receipts, so that a store refunds only the
// charges that it (or a store sharing its keys) made. The first key signs;
// every key verifies, so that keys can be rotated without breaking the
// receipts in flight: add the new key second everywhere, then move it first,
// then drop the old one once every receipt it signed has expired
// (Receipt.Expiry; a day for a 1/day limit). docs/redis.md describes it.
//
// The tag is SipHash-2-4-128 (a keyed PRF, 128-bit key and tag) of the
// receipt's whole content: its ID, identity, uncertain flag and, per charge,
// the rule, limit, algorithm, amount and window, as MarshalBinary encodes
// them. It is computed only when a receipt leaves memory: Sign records the
// keys and the receipt's ID and Identity (a few word copies, which is all
// signing costs a check), MarshalBinary computes the tag under the first key
// and encodes it, and Verify checks the tag of a decoded receipt against
// every key (about 50 ns for one limit). A receipt signed in memory verifies
// by what Sign recorded, without hashing: its ID and Identity must be
// unchanged and its signing key one of the keys. Nothing allocates.
//
// A ReceiptKeys is immutable and safe for concurrent use.
type ReceiptKeys struct {
	keys [][2]uint64 // SipHash keys, first signs
}

// NewReceiptKeys returns the keys that sign receipts with keys[0] and verify
// them with any of keys. Each key must have at least MinReceiptKeyLen bytes
// and should be random (32 random bytes is a good choice). SipHash's 128-bit
// key is the first 16 bytes of SHA-256("allowance receipt key\x00" || key),
// so any length of at least 16 bytes serves, and a longer one loses nothing.
func NewReceiptKeys(keys ...[]byte) (*ReceiptKeys, error) {
	if len(keys) == 0 {
		return nil, errors.New("receipt keys: none given; expected at least one")
	}
	k := &ReceiptKeys{keys: make([][2]uint64, len(keys))}
	for i, key := range keys {
		if len(key) < MinReceiptKeyLen {
			return nil, fmt.Errorf("receipt key %d is %d bytes; expected at least %d (random bytes, such as 32 from crypto/rand)", i+1, len(key), MinReceiptKeyLen)
		}
		h := sha256.New()
		h.Write([]byte("allowance receipt key\x00"))
		h.Write(key)
		var sum [sha256.Size]byte
		h.Sum(sum[:0])
		k.keys[i] = [2]uint64{binary.LittleEndian.Uint64(sum[:8]), binary.LittleEndian.Uint64(sum[8:16])}
	}
	return k, nil
}

// RandomReceiptKeys returns one random key: receipts it signs are refunded
// only by the store that holds it, which suits a store whose usage dies with
// its process (memstore's default).
func RandomReceiptKeys() *ReceiptKeys {
	var key [32]byte
	crand.Read(key[:])
	k, err := NewReceiptKeys(key[:])
	if err != nil {
		panic(err) // unreachable: the key is long enough
	}
	return k
}

// String describes the keys without revealing them.
func (k *ReceiptKeys) String() string { return fmt.Sprintf("ReceiptKeys(%d keys)", len(k.keys)) }

// GoString is String, so that %#v does not print the keys either.
func (k *ReceiptKeys) GoString() string { return k.String() }

// Len returns the number of keys.
func (k *ReceiptKeys) Len() int { return len(k.keys) }

// Sign signs r with the first key. A Store calls it when it has filled an
// allowed Decision's receipt, or made an uncertain one, before returning it.
// It records k and r's ID and Identity in r, and replaces any signature r
// had; the tag is computed when r is encoded (MarshalBinary). A receipt
// without charges is left as it is: it refunds nothing anyway.
func (k *ReceiptKeys) Sign(r *Receipt) {
	if r.Len() == 0 {
		return
	}
	r.signer, r.seal, r.signedIdentity = k, r.ID, r.Identity
	r.tagged = false
}

// Verify reports whether r is signed under one of the keys and unchanged
// since. A Store's Refund calls it before anything else and refunds nothing
// when it reports false (see RefundResult.SetUnverified).
//
// A receipt signed in memory (Sign) verifies when its ID and Identity are
// those it was signed with and the key that signed it is one of k's: what
// its tag's check would say, without computing it. A decoded receipt
// verifies when its tag is that of its content under one of the keys.
func (k *ReceiptKeys) Verify(r *Receipt) bool {
	if r.Len() == 0 {
		return false
	}
	if r.signer != nil {
		if r.ID != r.seal || r.Identity != r.signedIdentity {
			return false
		}
		return r.signer == k || k.has(r.signer.keys[0])
	}
	if !r.tagged {
		return false
	}
	var buf [256]byte
	b := r.appendContent(buf[:0], signedReceiptVersion, r.ID, r.Identity)
	tlo, thi := binary.LittleEndian.Uint64(r.seal[:8]), binary.LittleEndian.Uint64(r.seal[8:])
	for _, key := range k.keys {
		lo, hi := siphash.Sum128(key[0], key[1], b)
		if (lo^tlo)|(hi^thi) == 0 {
			return true
		}
	}
	return false
}

// has reports whether key is one of k's keys.
func (k *ReceiptKeys) has(key [2]uint64) bool {
	for _, x := range k.keys {
		if x == key {
			return true
		}
	}
	return false
}

// mac returns the tag under key of r's content with the given ID and
// identity: SipHash-2-4-128 of the bytes of its version 2 encoding before
// the tag. The encoding is built in a buffer on the stack and hashed in one
// piece; only a receipt too long for it (a long identity or many charges)
// has it allocated.
func (r *Receipt) mac(key [2]uint64, id ReceiptID, identity string) (uint64, uint64) {
	var buf [256]byte
	b := r.appendContent(buf[:0], signedReceiptVersion, id, identity)
	return siphash.Sum128(key[0], key[1], b)
}

// appendContent appends r's encoding in format version v, without the tag,
// to b, with the given ID and identity in place of r's.
func (r *Receipt) appendContent(b []byte, v byte, id ReceiptID, identity string) []byte {
	b = append(b, v, 0)
	if r.uncertain {
		b[len(b)-1] = 1
	}
	b = append(b, id[:]...)
	b = binary.AppendUvarint(b, uint64(len(identity)))
	b = append(b, identity...)
	b = binary.AppendUvarint(b, uint64(r.n))
	i := 0
	for k := range r.rules {
		rule := &r.rules[k]
		amount := uint64(r.amount(k))
		for _, l := range rule.Limits {
			if i == int(r.n) {
				return b
			}
			b = binary.AppendUvarint(b, uint64(len(rule.Name)))
			b = append(b, rule.Name...)
			b = binary.AppendUvarint(b, uint64(l.Count))
			b = binary.AppendUvarint(b, uint64(l.Period/time.Second))
			b = append(b, byte(rule.Algorithm))
			b = binary.AppendUvarint(b, amount)
			b = binary.AppendUvarint(b, uint64(r.window(i)))
			i++
		}
	}
	return b
}
