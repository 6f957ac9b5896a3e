package auth

import (
	"fmt"
	"testing"
	"time"

	"github.com/allowancehq/allowance/app/tasks/storetest"
)

// newClock returns taskd's one fake clock for tests, for the cache.
func newClock() *storetest.Clock {
	return storetest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
}

func hashOf(i int) []byte                   { return Hash(fmt.Sprintf("key-%d", i)) }
func (k *KeyCache) state(h []byte) Cached   { _, s := k.Get(h); return s }
func (k *KeyCache) user(h []byte) string    { u, _ := k.Get(h); return u }
func lens(k *KeyCache) (valid, unknown int) { return k.Len() }

// An unknown key is answered as unknown for UnknownTTL, then looked up
// again: a key created after it was cached as unknown works within the TTL.
func TestKeyCacheUnknownExpires(t *testing.T) {
	c := newClock()
	k := NewCache(CacheConfig{UnknownTTL: 30 * time.Second, Now: c.Now})
	h := hashOf(1)
	if s := k.state(h); s != Miss {
		t.Fatalf("empty cache: %v, want miss", s)
	}
	k.PutUnknown(h)
	c.Advance(30*time.Second - time.Nanosecond)
	if s := k.state(h); s != Unknown {
		t.Fatalf("just before the TTL: %v, want unknown", s)
	}
	c.Advance(time.Nanosecond)
	if s := k.state(h); s != Miss {
		t.Fatalf("at the TTL: %v, want miss (look the key up again)", s)
	}
	if _, u := lens(k); u != 0 {
		t.Errorf("the expired entry is still held: %d unknown entries", u)
	}
	// The key was created meanwhile; the lookup finds it.
	k.PutValid(h, "alice")
	if u, s := k.Get(h); s != Valid || u != "alice" {
		t.Fatalf("after PutValid: %q, %v; want alice, valid", u, s)
	}
}

// A flood of distinct unknown keys never holds more than UnknownSize
// entries, and does not evict the valid ones.
func TestKeyCacheUnknownBounded(t *testing.T) {
	c := newClock()
	k := NewCache(CacheConfig{UnknownSize: 100, ValidSize: 10, Now: c.Now})
	good := Hash("good")
	k.PutValid(good, "alice")
	for i := range 10_000 {
		k.PutUnknown(hashOf(i))
		if _, u := lens(k); u > 100 {
			t.Fatalf("after %d unknown keys the cache holds %d, want at most 100", i+1, u)
		}
	}
	if v, u := lens(k); v != 1 || u != 100 {
		t.Fatalf("Len = %d valid, %d unknown; want 1, 100", v, u)
	}
	// The newest 100 are the ones kept.
	if s := k.state(hashOf(9_999)); s != Unknown {
		t.Errorf("newest unknown key: %v, want unknown", s)
	}
	if s := k.state(hashOf(0)); s != Miss {
		t.Errorf("oldest unknown key: %v, want miss (evicted)", s)
	}
	if u, s := k.Get(good); s != Valid || u != "alice" {
		t.Errorf("the valid key after the flood: %q, %v; want alice, valid", u, s)
	}
}

// Expired unknown entries are dropped as new ones come, so a slow trickle
// of random keys holds only the last UnknownTTL's worth.
func TestKeyCacheUnknownExpiredDropped(t *testing.T) {
	c := newClock()
	k := NewCache(CacheConfig{UnknownTTL: 10 * time.Second, UnknownSize: 1000, Now: c.Now})
	for i := range 100 {
		k.PutUnknown(hashOf(i))
		c.Advance(time.Second)
	}
	// The last put, at 99s, dropped every entry 10s old or older (0s to
	// 89s): those of 90s to 99s remain.
	if _, u := lens(k); u != 10 {
		t.Fatalf("%d unknown entries after 100 keys 1s apart with a 10s TTL; want 10", u)
	}
}

// A valid key is answered for ValidTTL, then Stale (with its user) until it
// is looked up again; valid entries are bounded, least recently used first
// out; PutUnknown forgets a valid key.
func TestKeyCacheValid(t *testing.T) {
	c := newClock()
	k := NewCache(CacheConfig{ValidTTL: time.Minute, ValidSize: 2, Now: c.Now})
	a, b, d := Hash("a"), Hash("b"), Hash("d")
	k.PutValid(a, "alice")
	k.PutValid(b, "bob")
	c.Advance(time.Minute)
	if u, s := k.Get(a); s != Stale || u != "alice" {
		t.Fatalf("after the TTL: %q, %v; want alice, stale", u, s)
	}
	// a was just used, so d evicts b.
	k.PutValid(d, "dan")
	if s := k.state(b); s != Miss {
		t.Errorf("least recently used key: %v, want miss", s)
	}
	if s := k.state(a); s != Stale {
		t.Errorf("recently used key: %v, want stale", s)
	}
	k.PutValid(a, "alice")
	if s := k.state(a); s != Valid {
		t.Errorf("looked up again: %v, want valid", s)
	}
	k.PutUnknown(a)
	if s := k.state(a); s != Unknown {
		t.Errorf("after PutUnknown: %v, want unknown", s)
	}
	if v, _ := lens(k); v != 1 {
		t.Errorf("%d valid entries, want 1 (dan)", v)
	}
	if k.user(d) != "dan" {
		t.Errorf("dan's key lost its user")
	}
}

// A hash of the wrong length is never cached.
func TestKeyCacheBadHash(t *testing.T) {
	k := NewCache(CacheConfig{})
	k.PutValid([]byte("short"), "x")
	k.PutUnknown(nil)
	if s := k.state([]byte("short")); s != Miss {
		t.Errorf("short hash: %v, want miss", s)
	}
	if v, u := lens(k); v != 0 || u != 0 {
		t.Errorf("Len = %d, %d; want nothing cached", v, u)
	}
}
