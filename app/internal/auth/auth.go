// Package auth is taskd's API-key authentication: it makes keys, hashes
// them for storage, reads them from the Authorization header and carries the
// authenticated user in a request's context.
//
// A key is "tk_" followed by 43 base64url characters (32 random bytes). Only
// its SHA-256 hash is stored, so a leaked database does not leak keys; keys
// have enough entropy that an unsalted fast hash is the right choice.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// KeyPrefix starts every API key, so that a key is recognisable in logs and
// by secret scanners.
const KeyPrefix = "tk_"

// keyBytes is the number of random bytes in a key.
const keyBytes = 32

// keyLen is the length of a key's text: the prefix and 43 base64url digits.
var keyLen = len(KeyPrefix) + base64.RawURLEncoding.EncodedLen(keyBytes)

// NewKey returns a new random API key and the hash to store for it.
func NewKey() (key string, hash []byte) {
	var b [keyBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return key, Hash(key)
}

// Hash returns the SHA-256 hash of key, the form keys are stored and looked
// up in.
func Hash(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// Errors of Bearer.
var (
	ErrNoCredentials = errors.New("no API key; expected the header Authorization: Bearer <key>")
	ErrMalformedKey  = errors.New("malformed API key")
)

// Bearer returns the API key of the request's Authorization header
// ("Bearer <key>", scheme case-insensitive). A missing header is
// ErrNoCredentials; another scheme, or a token that is not shaped like a
// key made by NewKey, is an error wrapping ErrMalformedKey that says what was
// expected. The key is not checked against any store.
func Bearer(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", ErrNoCredentials
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: the Authorization header must be \"Bearer <key>\"", ErrMalformedKey)
	}
	token = strings.TrimSpace(token)
	if !strings.HasPrefix(token, KeyPrefix) || len(token) != keyLen {
		return "", fmt.Errorf("%w: expected %q followed by %d characters, as printed by taskd keys create", ErrMalformedKey, KeyPrefix, keyLen-len(KeyPrefix))
	}
	if _, err := base64.RawURLEncoding.DecodeString(token[len(KeyPrefix):]); err != nil {
		return "", fmt.Errorf("%w: expected base64url characters after %q", ErrMalformedKey, KeyPrefix)
	}
	return token, nil
}

// MaxUserLen bounds a user name.
const MaxUserLen = 64

// ValidUser reports whether name is a usable user name: 1 to 64 ASCII
// letters, digits, '.', '_', '-' or '@'.
func ValidUser(name string) error {
	if name == "" {
		return errors.New("user name is empty; expected 1 to 64 letters, digits, '.', '_', '-' or '@'")
	}
	if len(name) > MaxUserLen {
		return fmt.Errorf("user name %q is %d bytes long; at most %d are allowed", name, len(name), MaxUserLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@') {
			return fmt.Errorf("user name %q: character %q at byte %d is not allowed; expected letters, digits, '.', '_', '-' or '@'", name, c, i)
		}
	}
	return nil
}

type userKey struct{}

// WithUser returns ctx carrying the authenticated user id.
func WithUser(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, userKey{}, user)
}

// UserFrom returns the authenticated user id of ctx, and false when there is
// none. Its shape fits httplimit.FromContext.
func UserFrom(ctx context.Context) (string, bool) {
	u, ok := ctx.Value(userKey{}).(string)
	return u, ok && u != ""
}
