package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/allowancehq/allowance"
)

// headerReplayed is set to "true" on the answer to a submit that repeated
// an earlier one with the same Idempotency-Key: the task is the one that
// request created.
const headerReplayed = "Idempotent-Replayed"

// idempotencyKey returns the request's Idempotency-Key header
// (draft-ietf-httpapi-idempotency-key-header): "" without one, else the key
// without the quotes of its structured-field string form, or an error the
// client can act on. It accepts what httplimit accepts for a rule with
// IdempotencyKey, so the two never disagree about a key.
func idempotencyKey(h http.Header) (string, error) {
	vs := h.Values("Idempotency-Key")
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", fmt.Errorf("the request has %d Idempotency-Key headers; expected one", len(vs))
	}
	k := vs[0]
	if len(k) >= 2 && k[0] == '"' && k[len(k)-1] == '"' {
		k = k[1 : len(k)-1]
	}
	if k == "" || len(k) > allowance.MaxIdempotencyKeyLen {
		return "", fmt.Errorf("the Idempotency-Key header is %d characters long; expected 1 to %d", len(k), allowance.MaxIdempotencyKeyLen)
	}
	for i := range len(k) {
		if c := k[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return "", fmt.Errorf("the Idempotency-Key header holds %q at position %d; expected printable ASCII without spaces, quotes or backslashes", c, i+1)
		}
	}
	return k, nil
}

// requestDigest identifies a submit's request by its meaning: the kind and
// the input normalized (object keys sorted, insignificant space dropped,
// numbers kept as written, no input the same as null), hashed with
// SHA-256. Two submits with one Idempotency-Key are the same request when
// their digests are equal. input must be valid JSON or empty.
func requestDigest(kind string, input json.RawMessage) (string, error) {
	norm := []byte("null")
	if len(bytes.TrimSpace(input)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(input))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return "", fmt.Errorf("normalize input: %w", err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return "", fmt.Errorf("normalize input: %w", err)
		}
		norm = b
	}
	h := sha256.New()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write(norm)
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
