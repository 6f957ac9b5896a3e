package httplimit

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
)

// matcher matches one distinct pattern, for the rules in mask.
type matcher struct {
	mux  *http.ServeMux
	mask uint64
}

// matched is the handler a matcher's ServeMux holds: the mux tells us the
// pattern matched by returning it. It is never called.
type matched struct{}

func (matched) ServeHTTP(http.ResponseWriter, *http.Request) {}

// newMux returns a ServeMux holding only pattern, or the error ServeMux's
// panic describes when the pattern is not valid.
func newMux(pattern string) (mux *http.ServeMux, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("match %q: %v", pattern, p)
		}
	}()
	mux = http.NewServeMux()
	mux.Handle(pattern, matched{})
	return mux, nil
}

// matchCache remembers the rules that matched recent requests, by method,
// host and path (all a ServeMux looks at), so that a request to a path seen
// recently costs no ServeMux lookups and no allocation. It is a fixed array
// of slots, each holding the last request that hashed to it: memory is
// bounded and a miss only costs the lookups the cache saves.
type matchCache struct {
	seed  maphash.Seed
	slots [matchSlots]atomic.Pointer[matchEntry]
}

const (
	matchSlotBits = 10
	matchSlots    = 1 << matchSlotBits
	maxCachePath  = 256 // longer paths and hosts are not cached
)

type matchEntry struct {
	method, host, path, raw string
	mask                    uint64
}

// slot returns r's slot. Only the path is hashed: a server sees a few
// methods and usually one host, so their lengths and end bytes spread them
// over slots well enough, for a third of the hashing. Requests that share a
// slot only cost each other ServeMux lookups.
func (c *matchCache) slot(r *http.Request) *atomic.Pointer[matchEntry] {
	h := maphash.String(c.seed, r.URL.Path)
	// The multiplications carry the low bits up to the top bits, which pick
	// the slot. Hosts get every byte mixed in: per-tenant hosts such as
	// t01.example.com and t02.example.com differ only inside.
	h ^= ends(r.Method)*0x9e3779b97f4a7c15 ^ fnv(r.Host)*0xc2b2ae3d27d4eb4f
	return &c.slots[h>>(64-matchSlotBits)]
}

// fnv returns the 64-bit FNV-1a hash of s: cheaper than maphash for the
// short hosts of requests, and enough to spread them over cache slots (the
// entries compare the whole host, so a collision costs a look-up, not a
// wrong match).
func fnv(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// ends packs the length and the first and last bytes of s.
func ends(s string) uint64 {
	if s == "" {
		return 0
	}
	return uint64(len(s))<<16 | uint64(s[0])<<8 | uint64(s[len(s)-1])
}

// match returns the rules that match r, as bits.
func (m *Middleware) match(r *http.Request) uint64 {
	if r.Method == http.MethodConnect || len(r.URL.Path) > maxCachePath || len(r.Host) > maxCachePath || len(r.URL.RawPath) > maxCachePath {
		return m.matchMux(r)
	}
	s := m.cache.slot(r)
	if e := s.Load(); e != nil && e.path == r.URL.Path && e.method == r.Method && e.host == r.Host && e.raw == r.URL.RawPath {
		return e.mask
	}
	mask := m.matchMux(r)
	s.Store(&matchEntry{method: r.Method, host: r.Host, path: r.URL.Path, raw: r.URL.RawPath, mask: mask})
	return mask
}

// matchMux asks each pattern's ServeMux. A path that is not clean
// ("/v1/../v1/tasks") is matched in its clean form, as the request a ServeMux
// would redirect it to: other routers may serve it as is, and it must not
// escape its limits.
func (m *Middleware) matchMux(r *http.Request) uint64 {
	if r.Method != http.MethodConnect {
		if p := r.URL.Path; p != "" && cleanPath(p) != p {
			r2 := *r
			u := *r.URL
			u.Path, u.RawPath = cleanPath(p), ""
			r2.URL = &u
			r = &r2
		}
	}
	var mask uint64
	for i := range m.matchers {
		if h, _ := m.matchers[i].mux.Handler(r); h != nil {
			if _, ok := h.(matched); ok {
				mask |= m.matchers[i].mask
			}
		}
	}
	return mask
}

// cleanPath returns the canonical form of an URL path, as ServeMux computes
// it: rooted, without "." and ".." elements or double slashes, keeping a
// trailing slash. It does not allocate for a path that is already clean.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		if len(p) == len(np)+1 && strings.HasPrefix(p, np) {
			np = p
		} else {
			np += "/"
		}
	}
	return np
}
