package redisstore

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/algo"
)

// maxRawIdentity is the longest identity, in bytes, kept readable (base64) in
// keys; longer ones are hashed.
const maxRawIdentity = 48

// tag returns the hash tag content for an identity: "b" and the identity in
// unpadded URL-safe base64 when it has at most maxRawIdentity bytes, else "h"
// and the base64 of its SHA-256. The alphabet has no '{', '}', ':' or space,
// the two forms differ in their first byte, and the tag is at most 65 bytes,
// so no identity can leave the tag, collide with another, or make keys long.
func tag(identity string) string {
	if len(identity) <= maxRawIdentity {
		return "b" + base64.RawURLEncoding.EncodeToString([]byte(identity))
	}
	sum := sha256.Sum256([]byte(identity))
	return "h" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// identityBase returns "<prefix>{<tag>}:", the start of every key of an
// identity.
func (s *Store) identityBase(identity string) string {
	return s.prefix + "{" + tag(identity) + "}:"
}

// receiptKey is the key of a receipt id: its charge trace, refund mark or
// void mark. Rule names cannot contain '#', so it never meets a limit key.
func receiptKey(base string, id allowance.ReceiptID) string {
	return base + "#" + id.String()
}

// algCode is the algorithm's letter in keys and script arguments.
func algCode(a allowance.Algorithm) string { return algo.Kind(a).Letter() }

// contCode is the algorithm's letter in upper case: in script arguments, a
// limit whose state is the next part of the key of the limit before it.
func contCode(a allowance.Algorithm) string {
	return strings.ToUpper(algCode(a))
}

// shared reports whether the n limits of a rule with algorithm a keep their
// states in one key (ruleKey): every algorithm's but the sliding log's, which
// keeps a sorted set per limit.
func shared(a allowance.Algorithm, n int) bool {
	return n > 1 && a != allowance.SlidingLog
}

// ruleKey is the key of the states of a rule's limits that share one
// (shared): "<base><rule>:<alg>:<count>:<period in seconds>,…" with every
// limit in the rule's order, so that a rule whose limits change starts on
// a new key, and a one-limit rule's key is limitKey's. Its value is the
// limits' states, each as limitKey's would be, joined by '|'.
func ruleKey(base, rule string, a allowance.Algorithm, limits []allowance.Limit) string {
	var b strings.Builder
	b.Grow(len(base) + len(rule) + 24*len(limits))
	b.WriteString(base)
	b.WriteString(rule)
	b.WriteByte(':')
	b.WriteString(algCode(a))
	for i, l := range limits {
		if i == 0 {
			b.WriteByte(':')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(l.Count, 10))
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(int64(l.Period.Seconds()), 10))
	}
	return b.String()
}

// ruleKeys appends to keys those of the states of r's limits, in the order
// the scripts read them: one key when they share one (ruleKey), else a key
// per limit (limitKey), two for a sliding log.
func ruleKeys(keys []string, base string, r *allowance.Rule) []string {
	if shared(r.Algorithm, len(r.Limits)) {
		return append(keys, ruleKey(base, r.Name, r.Algorithm, r.Limits))
	}
	for _, l := range r.Limits {
		k := limitKey(base, r.Name, r.Algorithm, l)
		keys = append(keys, k)
		if r.Algorithm == allowance.SlidingLog {
			keys = append(keys, k+":t")
		}
	}
	return keys
}

// limitCode is the algorithm letter the scripts' arguments give r's j-th
// limit: in upper case when its state follows the one before it in a
// shared key.
func limitCode(r *allowance.Rule, j int) string {
	if j > 0 && shared(r.Algorithm, len(r.Limits)) {
		return contCode(r.Algorithm)
	}
	return algCode(r.Algorithm)
}

// limitKey is "<base><rule>:<alg>:<count>:<period in seconds>"; a sliding
// log's total lives beside it at the same key plus ":t".
func limitKey(base, rule string, a allowance.Algorithm, l allowance.Limit) string {
	var b strings.Builder
	b.Grow(len(base) + len(rule) + 24)
	b.WriteString(base)
	b.WriteString(rule)
	b.WriteByte(':')
	b.WriteString(algCode(a))
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(l.Count, 10))
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(int64(l.Period.Seconds()), 10))
	return b.String()
}

// guardKey is the key of a rule's refund guard counter.
func guardKey(base, rule string) string { return base + rule + ":g" }

// recordKey is the key of the record of an idempotent charge
// (allowance.Request.IdempotencyKey): "<base>~" and, in URL-safe base64,
// the first 16 bytes of the SHA-256 of the request's rules (names,
// algorithms and limits, in order) and its key. Rule names cannot contain
// '~' or '#', so it never meets a limit key or a receipt key; and the
// client's key, hashed, can neither leave the hash tag nor grow the key.
func recordKey(base string, req *allowance.Request) string {
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	put := func(v int64) { h.Write(buf[:binary.PutVarint(buf[:], v)]) }
	put(int64(len(req.Rules)))
	for i := range req.Rules {
		r := &req.Rules[i]
		put(int64(len(r.Name)))
		h.Write([]byte(r.Name))
		put(int64(r.Algorithm))
		put(int64(len(r.Limits)))
		for _, l := range r.Limits {
			put(l.Count)
			put(int64(l.Period))
		}
	}
	h.Write([]byte(req.IdempotencyKey))
	var sum [sha256.Size]byte
	return base + "~" + base64.RawURLEncoding.EncodeToString(h.Sum(sum[:0])[:16])
}

// recordCosts is what a record of req keeps of its costs, for a repeat's
// receipt: "0" when every rule is charged its own amount, else the number
// of rules and per rule the cost req sets for it, 0 for the rule's own.
func recordCosts(req *allowance.Request) string {
	var b []byte
	for i := range req.Rules {
		if c := req.Amount(i); c != req.Rules[i].Amount() {
			if b == nil {
				b = strconv.AppendInt(b, int64(len(req.Rules)), 10)
				for range i {
					b = append(b, " 0"...)
				}
			}
			b = append(b, ' ')
			b = strconv.AppendInt(b, c, 10)
		} else if b != nil {
			b = append(b, " 0"...)
		}
	}
	if b == nil {
		return "0"
	}
	return string(b)
}
