package redisstore

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/allowancehq/allowance"
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
func algCode(a allowance.Algorithm) string {
	switch a {
	case allowance.FixedWindow:
		return "f"
	case allowance.SlidingWindow:
		return "s"
	case allowance.SlidingLog:
		return "l"
	case allowance.GCRA:
		return "g"
	}
	return "?"
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
