package redisstore

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzTag checks the identity encoding: every tag is non-empty, at most 65
// bytes, free of anything that could end a hash tag or a key part, and
// decodes back to its identity when the identity is short; a long identity's
// tag is its hash, in a form no short identity has.
func FuzzTag(f *testing.F) {
	for _, s := range []string{"", "alice", "{a}", "a:b", "a b\n", "\xff\xfe", strings.Repeat("x", 48), strings.Repeat("y", 49), strings.Repeat("{", 10<<10)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tg := tag(id)
		if tg == "" || len(tg) > 65 {
			t.Fatalf("tag(%q) = %q: length %d, want 1 to 65", id, tg, len(tg))
		}
		if strings.ContainsAny(tg, "{}: \t\r\n#") {
			t.Fatalf("tag(%q) = %q contains a separator", id, tg)
		}
		switch tg[0] {
		case 'b':
			if len(id) > maxRawIdentity {
				t.Fatalf("tag(%q) is readable for a %d-byte identity", id, len(id))
			}
			raw, err := base64.RawURLEncoding.DecodeString(tg[1:])
			if err != nil || string(raw) != id {
				t.Fatalf("tag(%q) = %q decodes to %q, %v", id, tg, raw, err)
			}
		case 'h':
			sum := sha256.Sum256([]byte(id))
			if len(id) <= maxRawIdentity || tg[1:] != base64.RawURLEncoding.EncodeToString(sum[:]) {
				t.Fatalf("tag(%q) = %q is not the hash form of a long identity", id, tg)
			}
		default:
			t.Fatalf("tag(%q) = %q has no form marker", id, tg)
		}
	})
}
