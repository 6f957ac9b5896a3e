package httplimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allowancehq/allowance"
)

// Rule is an allowance.Rule (name, limits, algorithm, cost, refund guard)
// with what the middleware needs to apply it to HTTP requests.
type Rule struct {
	allowance.Rule

	// Match selects the requests the rule charges, in net/http ServeMux
	// pattern syntax: "[METHOD ][HOST]/[PATH]", such as "POST /v1/tasks",
	// "GET /v1/" (GET and HEAD of everything under /v1/), "/" (every
	// request) or "api.example.com/". Wildcards ("/v1/tasks/{id}") are
	// allowed. A request is charged for every rule whose pattern matches it,
	// not only the most specific one.
	Match string

	// RefundOn lists statuses (200 to 599) after which the charge of the
	// request is given back automatically, such as 409 Conflict. The refund
	// is made when the handler writes the status (WriteHeader, or its first
	// Write), before the headers are sent, so the response's rate-limit
	// headers show the refunded budget. A request that matched several rules
	// has one receipt: it is refunded as a whole when the status is in the
	// RefundOn of any of them.
	RefundOn []int

	// FailOpen says what happens when the store fails or times out: serve
	// the request without limiting it (true; the failure is logged and
	// counted), or answer 503 Service Unavailable (false, the default). A
	// request that matches several rules fails open only when all of them
	// do.
	FailOpen bool

	// Cost, when set, computes what the request costs this rule's limits,
	// in place of the rule's fixed Cost: its size in bytes or rows, the
	// tokens it may use. It must return 1 to the smallest count of the
	// rule's limits, or 0 for the rule's Cost. An error is the client's:
	// the request is answered 400 Bad Request with the error's text, and
	// so is a cost out of range, since no request of that cost could ever
	// pass. Nothing is charged then. Cost runs before the check, on every
	// request the rule matches; it must not read the body unless the
	// handler can still read it afterwards.
	Cost func(r *http.Request) (int64, error)

	// IdempotencyKey makes the rule's checks idempotent by the request's
	// Idempotency-Key header (draft-ietf-httpapi-idempotency-key-header: a
	// quoted string, or a bare token as many clients send): a request
	// retried with the same key while the first one's charge counts is not
	// charged again (allowance.CheckOptions.IdempotencyKey). A request
	// without the header is checked as usual; a key that is not 1 to 255
	// printable ASCII characters is answered 400. The repeat's refunds,
	// declarative or not, do nothing: the charge is the first request's
	// (Refund returns ErrRepeated). A request that matches several rules
	// uses the key when any of them asks for it.
	IdempotencyKey bool
}

// Anonymous says what the middleware does with a request whose KeyFunc finds
// no identity. The zero value is RejectUnauthorized.
type Anonymous uint8

// What to do with a request that has no identity.
const (
	// RejectUnauthorized answers 401 Unauthorized (problem+json).
	RejectUnauthorized Anonymous = iota
	// RejectBadRequest answers 400 Bad Request (problem+json).
	RejectBadRequest
	// LimitByIP charges the client's IP address instead, as ClientIP with
	// Config.TrustedProxies finds it, under the identity "ip:" + address so
	// that it cannot share a budget with a user id.
	LimitByIP
)

// DefaultTimeout bounds a store call when Config.Timeout is zero.
const DefaultTimeout = time.Second

// maxRules bounds Config.Rules: a request's matching rules are kept as the
// bits of a uint64.
const maxRules = 64

// Config configures a Middleware. Store and Rules are required.
type Config struct {
	// Store keeps the usage: memstore, redisstore, or any allowance.Store.
	Store allowance.Store
	// Rules are matched against every request; at most 64, unique names.
	Rules []Rule
	// Key finds a request's identity. Nil means ClientIP(TrustedProxies...).
	Key KeyFunc
	// Anonymous is the outcome for a request Key finds no identity for.
	Anonymous Anonymous
	// TrustedProxies are the proxies whose Forwarded and X-Forwarded-For
	// headers are believed, by the default Key and by LimitByIP.
	TrustedProxies []netip.Prefix
	// Logger receives the middleware's logs; nil means slog.Default().
	Logger *slog.Logger
	// Observer, when not nil, receives the middleware's measurements;
	// promlimit.New records them as Prometheus metrics.
	Observer Observer
	// Timeout bounds each store call (a check, a refund, a peek). Zero means
	// DefaultTimeout; negative means only the request's context bounds it.
	Timeout time.Duration
	// Settle bounds the queue of voids and refunds that the store could not
	// take when asked; they are retried in the background.
	Settle SettleConfig
}

// Middleware rate limits HTTP requests by Config's rules. It is safe for
// concurrent use; make one and wrap handlers with Handler.
type Middleware struct {
	store    allowance.Store
	rules    []Rule
	key      KeyFunc
	ipKey    KeyFunc
	anon     Anonymous
	log      *slog.Logger
	met      *metrics
	timeout  time.Duration
	matchers []matcher
	index    map[string]int     // rule name to its bit in a mask
	peeks    []uint64           // the rule sets Peek reads, in configuration order
	free     *allowance.Limiter // refunds without refund guards

	cache    *matchCache
	deadline deadlines
	settle   settler

	setsMu sync.Mutex
	sets   atomic.Pointer[map[uint64]*ruleSet]
}

// New returns a Middleware for cfg, or an error naming the first problem with
// it: a missing store, an invalid rule, a bad pattern or status.
func New(cfg Config) (*Middleware, error) {
	if cfg.Store == nil {
		return nil, errors.New("httplimit: config: Store is nil")
	}
	if len(cfg.Rules) == 0 {
		return nil, errors.New("httplimit: config: no rules; expected at least one")
	}
	if len(cfg.Rules) > maxRules {
		return nil, fmt.Errorf("httplimit: config: %d rules; at most %d are allowed", len(cfg.Rules), maxRules)
	}
	if cfg.Anonymous > LimitByIP {
		return nil, fmt.Errorf("httplimit: config: unknown Anonymous value %d", cfg.Anonymous)
	}
	if cfg.Settle.MaxPending < 0 || cfg.Settle.MaxAge < 0 {
		return nil, fmt.Errorf("httplimit: config: Settle %+v: expected MaxPending and MaxAge of 0 (the default) or more", cfg.Settle)
	}
	m := &Middleware{
		store:   cfg.Store,
		key:     cfg.Key,
		ipKey:   ClientIP(cfg.TrustedProxies...),
		anon:    cfg.Anonymous,
		log:     cfg.Logger,
		timeout: cfg.Timeout,
		index:   make(map[string]int),
		cache:   &matchCache{seed: maphash.MakeSeed()},
	}
	if m.key == nil {
		m.key = m.ipKey
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.timeout == 0 {
		m.timeout = DefaultTimeout
	}
	m.deadline.init(m.timeout)
	m.settle.init(m, cfg.Settle)
	patterns := map[string]int{}
	for i, r := range cfg.Rules {
		if err := r.Rule.Validate(); err != nil {
			return nil, fmt.Errorf("httplimit: config: rule %d: %w", i+1, err)
		}
		for _, prev := range cfg.Rules[:i] {
			if prev.Name == r.Name {
				return nil, fmt.Errorf("httplimit: config: rule %q is given twice", r.Name)
			}
		}
		for _, s := range r.RefundOn {
			if s < 200 || s > 599 {
				return nil, fmt.Errorf("httplimit: config: rule %q: refund_on status %d; expected a status from 200 to 599", r.Name, s)
			}
		}
		r.Limits = slices.Clone(r.Limits)
		r.RefundOn = slices.Clone(r.RefundOn)
		m.rules = append(m.rules, r)
		m.index[r.Name] = i
		pat := strings.TrimSpace(r.Match)
		if pat == "" {
			return nil, fmt.Errorf("httplimit: config: rule %q: match is empty; expected a ServeMux pattern such as \"POST /v1/tasks\" or \"/\"", r.Name)
		}
		k, ok := patterns[pat]
		if !ok {
			mux, err := newMux(pat)
			if err != nil {
				return nil, fmt.Errorf("httplimit: config: rule %q: %w", r.Name, err)
			}
			k = len(m.matchers)
			patterns[pat] = k
			m.matchers = append(m.matchers, matcher{mux: mux})
		}
		m.matchers[k].mask |= 1 << i
	}
	m.met = newMetrics(cfg.Observer)
	// Every store call goes through the Limiter of a rule set, the one
	// that checks those rules together, so the root package, not this one,
	// says which refund guards apply. Peek reads the rule sets of every
	// rule, MaxRules at a time; free refunds without guards (voids, and
	// charges whose handler panicked), since its rules have none.
	empty := map[uint64]*ruleSet{}
	m.sets.Store(&empty)
	var free []allowance.Rule
	for i := 0; i < len(m.rules); i += allowance.MaxRules {
		var mask uint64
		for k := i; k < min(i+allowance.MaxRules, len(m.rules)); k++ {
			mask |= 1 << k
			if i == 0 {
				r := m.rules[k].Rule
				r.RefundGuard = allowance.Limit{}
				free = append(free, r)
			}
		}
		if _, err := m.set(mask); err != nil {
			return nil, fmt.Errorf("httplimit: config: %w", err)
		}
		m.peeks = append(m.peeks, mask)
	}
	free0, err := allowance.NewLimiter(m.store, free...)
	if err != nil {
		return nil, fmt.Errorf("httplimit: config: %w", err)
	}
	m.free = free0
	return m, nil
}

// Rules returns the names of the rules that match r, in configuration order.
func (m *Middleware) Rules(r *http.Request) []string {
	var out []string
	mask := m.match(r)
	for i, rule := range m.rules {
		if mask&(1<<i) != 0 {
			out = append(out, rule.Name)
		}
	}
	return out
}

// Handler returns next wrapped by the middleware. Requests that match no
// rule go to next unchanged.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.serve(w, r, next)
	})
}

func (m *Middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	mask := m.match(r)
	if mask == 0 {
		next.ServeHTTP(w, r)
		return
	}
	set, err := m.set(mask)
	if err != nil {
		m.log.ErrorContext(r.Context(), "rate limit: rules cannot be checked together", "error", err)
		writeProblem(w, r, problem{Status: http.StatusInternalServerError, Detail: "The rate limits of this request are misconfigured."})
		return
	}
	id, err := m.key(r)
	if err != nil {
		m.log.DebugContext(r.Context(), "rate limit: no valid identity", "error", err)
		writeProblem(w, r, problem{Status: http.StatusBadRequest, Detail: "The request's identity could not be read: " + err.Error()})
		return
	}
	if id == "" {
		switch m.anon {
		case RejectUnauthorized:
			writeProblem(w, r, problem{Status: http.StatusUnauthorized, Detail: "This endpoint is rate limited per caller; the request does not say who the caller is."})
			return
		case RejectBadRequest:
			writeProblem(w, r, problem{Status: http.StatusBadRequest, Detail: "This endpoint is rate limited per caller; the request does not say who the caller is."})
			return
		case LimitByIP:
			ip, err := m.ipKey(r)
			if err != nil {
				writeProblem(w, r, problem{Status: http.StatusBadRequest, Detail: "The client's address could not be read: " + err.Error()})
				return
			}
			id = "ip:" + ip
		}
	}

	st := &state{Context: r.Context(), m: m, set: set}
	var start time.Time
	if m.met.timed {
		start = time.Now()
	}
	costs, err := set.costsOf(r, st.costs[:])
	if err != nil {
		m.log.DebugContext(r.Context(), "rate limit: invalid cost", "error", err)
		writeProblem(w, r, problem{Status: http.StatusBadRequest, Detail: "The request's rate-limit cost is not acceptable: " + err.Error() + "."})
		return
	}
	var idemKey string
	if set.idempotent {
		if idemKey, err = idempotencyKey(r.Header); err != nil {
			writeProblem(w, r, problem{Status: http.StatusBadRequest, Detail: err.Error()})
			return
		}
	}
	// The store fills the Decision in place, in the state, uncopied.
	if costs == nil && idemKey == "" {
		err = set.lim.CheckInto(m.storeCtx(r.Context(), &st.call), id, &st.d)
	} else {
		err = set.lim.CheckWith(m.storeCtx(r.Context(), &st.call), id, allowance.CheckOptions{Costs: costs, IdempotencyKey: idemKey}, &st.d)
	}
	m.met.storeCall("check", start)
	if err != nil {
		m.storeFailed(w, r, next, st, id, err)
		return
	}
	h := w.Header()
	if !st.d.Allowed {
		set.count(ckDenied)
		st.setHeaders(h, nil)
		writeDenied(w, r, &st.d)
		return
	}
	set.count(ckAllowed)
	st.setHeaders(h, nil)
	st.serve(w, r, next)
}

// storeFailed applies the failure policy of the request's rules. A charge
// whose outcome is unknown is voided whatever the policy: after a 503, and
// after a request served unlimited (fail open), which therefore costs
// nothing, whether or not the charge landed.
func (m *Middleware) storeFailed(w http.ResponseWriter, r *http.Request, next http.Handler, st *state, id string, err error) {
	ctx := r.Context()
	uncertain := errors.Is(err, allowance.ErrUncertain) && st.d.Receipt.Len() > 0
	if uncertain {
		m.met.uncertainCharge(&st.d.Receipt)
	}
	if ctx.Err() != nil {
		// The client is gone; there is no one to answer.
		if uncertain {
			st.settle("check failed, client gone")
		}
		return
	}
	if st.set.failOpen {
		st.set.count(ckErrorOpen)
		m.log.ErrorContext(ctx, "rate limit store failed; serving the request unlimited (fail open)",
			"user", id, "rules", st.set.names, "error", err)
		st.serve(w, r, next) // voids an uncertain charge when the handler is done
		return
	}
	st.set.count(ckErrorClosed)
	m.log.ErrorContext(ctx, "rate limit store failed; answering 503 (fail closed)",
		"user", id, "rules", st.set.names, "error", err)
	if uncertain {
		st.settle("check failed, request not served")
	}
	w.Header().Set("Retry-After", "1")
	writeProblem(w, r, problem{Status: http.StatusServiceUnavailable, Detail: "The rate limiter is unavailable; try again shortly."})
}

// Peek reports identity's usage of every limit of every rule, without
// charging, in configuration order: for an endpoint such as GET /v1/ratelimit.
func (m *Middleware) Peek(ctx context.Context, identity string) ([]allowance.Usage, error) {
	var out []allowance.Usage
	for _, mask := range m.peeks {
		set, err := m.set(mask)
		if err != nil {
			return nil, fmt.Errorf("httplimit: peek %q: %w", identity, err)
		}
		start := time.Now()
		u, err := set.lim.Peek(m.storeCtx(ctx, nil), identity)
		m.met.storeCall("peek", start)
		if err != nil {
			return nil, fmt.Errorf("httplimit: peek %q: %w", identity, err)
		}
		out = append(out, u...)
	}
	return out, nil
}
