package tasks

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

// idPrefix starts every task id.
const idPrefix = "t_"

// idEncoding is lower-case base32 without padding: URL-safe and
// case-insensitive to read aloud.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a new random task id: "t_" followed by 26 lower-case base32
// characters encoding 128 random bits. Ids are URL-safe and not ordered.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return idPrefix + idEncoding.EncodeToString(b[:])
}

// ValidID reports whether s has the form of an id made by NewID. Callers can
// answer "not found" for anything else without asking the store.
func ValidID(s string) bool {
	rest, ok := strings.CutPrefix(s, idPrefix)
	if !ok || len(rest) != 26 {
		return false
	}
	b, err := idEncoding.DecodeString(rest)
	return err == nil && len(b) == 16 && idEncoding.EncodeToString(b) == rest
}
