package auth

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// Defaults of CacheConfig.
const (
	// DefaultValidTTL is how long a key found in the store is trusted
	// without asking the store again.
	DefaultValidTTL = time.Minute
	// DefaultUnknownTTL is how long a key the store did not know is
	// answered as unknown without asking the store again: a key created
	// after it was cached as unknown works at most this long after.
	DefaultUnknownTTL = 30 * time.Second
	// DefaultValidSize bounds the valid keys a KeyCache remembers.
	DefaultValidSize = 10_000
	// DefaultUnknownSize bounds the unknown keys a KeyCache remembers.
	DefaultUnknownSize = 10_000
)

// CacheConfig configures a KeyCache. Zero fields take the Default values.
type CacheConfig struct {
	// ValidTTL is how long a valid key is answered from the cache; after
	// that it is Stale until looked up again.
	ValidTTL time.Duration
	// UnknownTTL is how long an unknown key is answered from the cache.
	UnknownTTL time.Duration
	// ValidSize and UnknownSize bound the entries of each kind. When one
	// kind is full, its least recently stored entry makes room.
	ValidSize   int
	UnknownSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Cached is what a KeyCache knows of a key.
type Cached uint8

// What a KeyCache knows of a key.
const (
	// Miss: nothing; look the key up.
	Miss Cached = iota
	// Valid: the key was found within ValidTTL; its user is known.
	Valid
	// Stale: the key was found, longer than ValidTTL ago; look it up again.
	// The user it had is returned, but must not be trusted.
	Stale
	// Unknown: the store did not know the key within UnknownTTL.
	Unknown
)

// String returns the state's name: miss, valid, stale or unknown.
func (c Cached) String() string {
	switch c {
	case Valid:
		return "valid"
	case Stale:
		return "stale"
	case Unknown:
		return "unknown"
	}
	return "miss"
}

// KeyCache remembers recent API key lookups by key hash: the user of each
// valid key, and the keys the store did not know. Both kinds are bounded in
// number (a flood of random keys evicts only unknown entries, never valid
// ones) and in age. It is safe for concurrent use.
//
// An entry takes about 200 bytes (the 32-byte hash, a user name of at most
// 64 bytes, a list element and a map slot), so the defaults bound the cache
// to about 4 MB.
type KeyCache struct {
	validTTL, unknownTTL time.Duration
	now                  func() time.Time

	mu      sync.Mutex
	valid   *lru
	unknown *lru
}

// NewCache returns an empty KeyCache configured by c.
func NewCache(c CacheConfig) *KeyCache {
	k := &KeyCache{validTTL: c.ValidTTL, unknownTTL: c.UnknownTTL, now: c.Now}
	if k.validTTL <= 0 {
		k.validTTL = DefaultValidTTL
	}
	if k.unknownTTL <= 0 {
		k.unknownTTL = DefaultUnknownTTL
	}
	if k.now == nil {
		k.now = time.Now
	}
	validSize, unknownSize := c.ValidSize, c.UnknownSize
	if validSize <= 0 {
		validSize = DefaultValidSize
	}
	if unknownSize <= 0 {
		unknownSize = DefaultUnknownSize
	}
	k.valid = newLRU(validSize)
	k.unknown = newLRU(unknownSize)
	return k
}

// Get returns what the cache knows of the key whose hash (Hash) is given,
// and for Valid and Stale its user.
func (k *KeyCache) Get(hash []byte) (user string, state Cached) {
	h, ok := key(hash)
	if !ok {
		return "", Miss
	}
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.unknown.get(h); e != nil {
		if now.Sub(e.at) < k.unknownTTL {
			return "", Unknown
		}
		k.unknown.remove(e)
	}
	if e := k.valid.get(h); e != nil {
		// A valid key in use stays in the cache: the least recently
		// used one makes room.
		k.valid.touch(e)
		if now.Sub(e.at) < k.validTTL {
			return e.user, Valid
		}
		return e.user, Stale
	}
	return "", Miss
}

// PutValid records that the key of hash belongs to user, as the store just
// said.
func (k *KeyCache) PutValid(hash []byte, user string) {
	h, ok := key(hash)
	if !ok {
		return
	}
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.unknown.get(h); e != nil {
		k.unknown.remove(e)
	}
	k.valid.put(h, user, now)
}

// PutUnknown records that the store does not know the key of hash, and
// forgets any user it had.
func (k *KeyCache) PutUnknown(hash []byte) {
	h, ok := key(hash)
	if !ok {
		return
	}
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.valid.get(h); e != nil {
		k.valid.remove(e)
	}
	// Entries are stored with the time, oldest last: expired ones go
	// first, so that a long flood leaves no dead weight behind.
	for e := k.unknown.oldest(); e != nil && now.Sub(e.at) >= k.unknownTTL; e = k.unknown.oldest() {
		k.unknown.remove(e)
	}
	k.unknown.put(h, "", now)
}

// Len returns the number of valid (and stale) and of unknown entries.
func (k *KeyCache) Len() (valid, unknown int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.valid.len(), k.unknown.len()
}

type hashKey = [sha256.Size]byte

func key(hash []byte) (hashKey, bool) {
	var h hashKey
	if len(hash) != len(h) {
		return h, false
	}
	copy(h[:], hash)
	return h, true
}

// lru is a bounded map of hashes to entries, the most recently stored or
// touched first.
type lru struct {
	max   int
	m     map[hashKey]*list.Element
	order *list.List // of *entry
}

type entry struct {
	hash hashKey
	user string
	at   time.Time // when the store was asked
}

func newLRU(max int) *lru {
	return &lru{max: max, m: make(map[hashKey]*list.Element), order: list.New()}
}

func (l *lru) len() int { return len(l.m) }

func (l *lru) get(h hashKey) *entry {
	if el, ok := l.m[h]; ok {
		return el.Value.(*entry)
	}
	return nil
}

func (l *lru) touch(e *entry) { l.order.MoveToFront(l.m[e.hash]) }

func (l *lru) remove(e *entry) {
	l.order.Remove(l.m[e.hash])
	delete(l.m, e.hash)
}

func (l *lru) oldest() *entry {
	if el := l.order.Back(); el != nil {
		return el.Value.(*entry)
	}
	return nil
}

// put stores or replaces the entry of h, first evicting the least recently
// stored or touched one when the map is full.
func (l *lru) put(h hashKey, user string, at time.Time) {
	if el, ok := l.m[h]; ok {
		e := el.Value.(*entry)
		e.user, e.at = user, at
		l.order.MoveToFront(el)
		return
	}
	if len(l.m) >= l.max {
		l.remove(l.oldest())
	}
	l.m[h] = l.order.PushFront(&entry{hash: h, user: user, at: at})
}
