package httplimit

import (
	"fmt"
	"math/bits"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/allowancehq/allowance"
)

// ruleSet is everything a request that matches exactly these rules needs,
// computed once for the set: the Limiter that charges them in one check, the
// constant header values, the refund statuses and the metric series.
type ruleSet struct {
	lim      *allowance.Limiter
	names    []string
	failOpen bool
	refundOn statuses

	// Per limit, in the order of the Decision's limit states.
	items  []string   // policy item names, quoted: `"create-task"`
	counts []int64    // limit counts
	limit  [][]string // X-RateLimit-Limit values, each of length and capacity 1
	policy []string   // the RateLimit-Policy value, length and capacity 1

	checks [][len(checkOutcomes)]func() // per rule

	// costFns holds each rule's Rule.Cost, in the set's order, when any
	// rule has one; nil otherwise. least is each rule's smallest count.
	costFns []func(*http.Request) (int64, error)
	least   []int64

	idempotent bool // a rule reads the Idempotency-Key header
}

// idempotencyKey returns the request's Idempotency-Key: "" without the
// header, the key without its quotes, or an error the client can act on.
func idempotencyKey(h http.Header) (string, error) {
	vs := h.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs) > 1 {
		return "", fmt.Errorf("the request has %d Idempotency-Key headers; expected one", len(vs))
	}
	k := vs[0]
	if len(k) >= 2 && k[0] == '"' && k[len(k)-1] == '"' {
		k = k[1 : len(k)-1]
	}
	if k == "" || len(k) > allowance.MaxIdempotencyKeyLen {
		return "", fmt.Errorf("the Idempotency-Key header is %d characters long; expected 1 to %d", len(k), allowance.MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return "", fmt.Errorf("the Idempotency-Key header holds %q at position %d; expected printable ASCII without spaces, quotes or backslashes", c, i+1)
		}
	}
	return k, nil
}

// costsOf returns the request's cost per rule of the set, in buf when it
// has room, or nil when no rule computes one.
func (rs *ruleSet) costsOf(r *http.Request, buf []int64) ([]int64, error) {
	if rs.costFns == nil {
		return nil, nil
	}
	var costs []int64
	if n := len(rs.costFns); n <= len(buf) {
		costs = buf[:n]
		clear(costs)
	} else {
		costs = make([]int64, n)
	}
	for k, f := range rs.costFns {
		if f == nil {
			continue
		}
		c, err := f(r)
		if err != nil {
			return nil, fmt.Errorf("cost for rate limit %q: %w", rs.names[k], err)
		}
		if c < 0 || c > rs.least[k] {
			return nil, fmt.Errorf("cost %d for rate limit %q is out of range: expected 1 to %d, the most one request can take", c, rs.names[k], rs.least[k])
		}
		costs[k] = c
	}
	return costs, nil
}

// statuses is a set of HTTP statuses 0 to 1023.
type statuses [16]uint64

func (s *statuses) add(code int) { s[code>>6] |= 1 << (code & 63) }

func (s *statuses) has(code int) bool {
	return code >= 0 && code < 1024 && s[code>>6]&(1<<(code&63)) != 0
}

func (rs *ruleSet) count(outcome int) {
	for _, c := range rs.checks {
		c[outcome]()
	}
}

// set returns the ruleSet of the rules in mask, building it on first use.
func (m *Middleware) set(mask uint64) (*ruleSet, error) {
	if rs, ok := (*m.sets.Load())[mask]; ok {
		return rs, nil
	}
	m.setsMu.Lock()
	defer m.setsMu.Unlock()
	old := *m.sets.Load()
	if rs, ok := old[mask]; ok {
		return rs, nil
	}
	rs, err := m.newRuleSet(mask)
	if err != nil {
		return nil, err
	}
	next := make(map[uint64]*ruleSet, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[mask] = rs
	m.sets.Store(&next)
	return rs, nil
}

func (m *Middleware) newRuleSet(mask uint64) (*ruleSet, error) {
	rs := &ruleSet{failOpen: true}
	var rules []allowance.Rule
	for mask != 0 {
		i := bits.TrailingZeros64(mask)
		mask &^= 1 << i
		r := m.rules[i]
		rules = append(rules, r.Rule)
		rs.names = append(rs.names, r.Name)
		rs.failOpen = rs.failOpen && r.FailOpen
		for _, s := range r.RefundOn {
			rs.refundOn.add(s)
		}
		var c [len(checkOutcomes)]func()
		for k, o := range checkOutcomes {
			c[k] = m.met.obs.Checks(r.Name, o)
		}
		rs.checks = append(rs.checks, c)
		rs.costFns = append(rs.costFns, r.Cost)
		rs.idempotent = rs.idempotent || r.IdempotencyKey
		least := r.Limits[0].Count
		for _, l := range r.Limits {
			least = min(least, l.Count)
		}
		rs.least = append(rs.least, least)
	}
	if !slices.ContainsFunc(rs.costFns, func(f func(*http.Request) (int64, error)) bool { return f != nil }) {
		rs.costFns = nil
	}
	lim, err := allowance.NewLimiter(m.store, rules...)
	if err != nil {
		return nil, fmt.Errorf("rules %s: %w", strings.Join(rs.names, ", "), err)
	}
	rs.lim = lim
	var policy []string
	for _, r := range rules {
		for _, l := range r.Limits {
			name := r.Name
			if len(r.Limits) > 1 {
				name += "/" + strconv.FormatInt(int64(l.Period.Seconds()), 10) + "s"
			}
			item := strconv.Quote(name) // rule names are plain ASCII, so Go quoting is SF quoting
			rs.items = append(rs.items, item)
			rs.counts = append(rs.counts, l.Count)
			rs.limit = append(rs.limit, []string{strconv.FormatInt(l.Count, 10)})
			policy = append(policy, item+";q="+strconv.FormatInt(l.Count, 10)+";w="+strconv.FormatInt(int64(l.Period.Seconds()), 10))
		}
	}
	rs.policy = []string{strings.Join(policy, ", ")}
	return rs, nil
}
