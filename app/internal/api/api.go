// Package api is taskd's HTTP API: the task endpoints under /v1/, the
// rate-limit usage endpoint, health, readiness and metrics.
//
// Requests to /v1/ go through, in order: authentication (an API key in
// "Authorization: Bearer <key>", resolved to a user id put in the context;
// 401 otherwise, or 429 when the client's address failed authentication too
// often), the httplimit middleware (which charges that user id), and the
// handler. /healthz, /readyz and /metrics are neither authenticated nor rate
// limited; /metrics can be moved to a listener of its own. Every error is
// application/problem+json (RFC 9457).
//
// Authentication answers from a KeyCache what it can: a key found in the
// store within the last minute, or not found within the last 30 seconds
// (auth.DefaultValidTTL, auth.DefaultUnknownTTL), is not looked up again.
// Each failure (no key, a malformed or an unknown one) is charged to the
// client's IP address by Options.AuthFailures, after the lookup that found
// the key unknown; a valid key costs nothing, even the first time it is
// seen. Before looking up a key the cache has not seen, the address's usage
// is read (Peek, no charge): a client over the limit gets 429 for such keys
// without any lookup, while the keys it used successfully before (still in
// the cache, even when stale) keep working: one failing script behind a NAT
// does not lock its neighbours out of keys they are using, nor out of keys
// they use for the first time once the window frees up. Concurrent lookups
// from one address can exceed the limit by as many as are in flight.
//
// The point of the service is in POST /v1/tasks: a user who already has a
// queued or running task gets 409 Conflict, and when a rule that charged the
// request lists conflict in its refund_on, the attempt is refunded before the
// 409 is written, so its rate-limit headers show the unchanged budget.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/httplimit"
)

// DefaultMaxBodyBytes bounds a request body when Options.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 10

// Workers is what the API needs of the worker pool (a *tasks.Pool): a nudge
// after a task is created and a stop after one is canceled.
type Workers interface {
	Notify()
	Cancel(id string) bool
}

// Check is one readiness check of GET /readyz, such as a ping of the
// database or of the limits store.
type Check struct {
	Name string
	Ping func(ctx context.Context) error
}

// Options configure a Server. Store, Limiter and Registry are required.
type Options struct {
	// Store keeps the tasks and API keys.
	Store tasks.Store
	// Limiter rate limits /v1/; its identity must come from the
	// authenticated user: httplimit.FromContext(auth.UserFrom).
	Limiter *httplimit.Middleware
	// ConflictRefund lists the names of the rules whose charge is given
	// back when a submit conflicts with an active task (refund_on:
	// [conflict]). A request's receipt is refunded as a whole when any rule
	// it was charged for is listed.
	ConflictRefund []string
	// Workers, when not nil, is told about new and canceled tasks.
	Workers Workers
	// Registry serves GET /metrics; the API registers its own metrics in
	// it too.
	Registry *prometheus.Registry
	// Ready lists the checks of GET /readyz; the store's Ping is always one
	// ("database").
	Ready []Check
	// MaxBodyBytes bounds request bodies (413 beyond); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives the API's logs; nil means slog.Default().
	Logger *slog.Logger

	// AuthFailures, when not nil, limits failed authentications per client
	// IP address: each failure is charged to the identity "ip:" and the
	// address ClientIP finds, and a client over the limit gets 429 before
	// an unknown key is looked up. Make it with AuthFailureRule over the
	// limits store of Limiter. Nil: failures are not limited.
	AuthFailures *allowance.Limiter
	// ClientIP finds a request's client address for AuthFailures; nil means
	// httplimit.ClientIP() (the connection's peer, no trusted proxies).
	ClientIP httplimit.KeyFunc
	// CheckTimeout bounds each call of AuthFailures' store; 0 means
	// httplimit.DefaultTimeout. When the store fails, failures are not
	// limited (logged at WARN): the limit protects the key lookups, which
	// the key cache protects too.
	CheckTimeout time.Duration
	// KeyCache configures the cache of API key lookups; zero fields take
	// auth's defaults.
	KeyCache auth.CacheConfig
	// SeparateMetrics leaves GET /metrics out of Handler (which answers it
	// 404) for MetricsHandler to serve on a listener of its own.
	SeparateMetrics bool
}

// AuthFailureRuleName names the rule of Options.AuthFailures.
const AuthFailureRuleName = "auth-failures"

// AuthFailureRule returns the rule of Options.AuthFailures for limit, such
// as 10/minute: a sliding window (no burst of twice the limit across a
// window boundary, constant memory per address) named AuthFailureRuleName.
func AuthFailureRule(limit allowance.Limit) allowance.Rule {
	return allowance.Rule{Name: AuthFailureRuleName, Limits: allowance.Limits{limit}, Algorithm: allowance.SlidingWindow}
}

// Server serves the API. Make one with New.
type Server struct {
	store    tasks.Store
	limiter  *httplimit.Middleware
	conflict []string
	workers  Workers
	registry *prometheus.Registry
	ready    []Check
	maxBody  int64
	log      *slog.Logger
	submits  *prometheus.CounterVec

	authFail     *allowance.Limiter
	clientIP     httplimit.KeyFunc
	peerIP       httplimit.KeyFunc // the connection's peer, the fallback of clientIP
	checkTimeout time.Duration
	keys         *auth.KeyCache
	authResults  *prometheus.CounterVec
	// separateMetrics: GET /metrics is served by MetricsHandler only.
	separateMetrics bool
}

// Results of authentication, the result label of taskd_auth_requests_total.
var authResults = []string{"valid", "valid_cached", "no_key", "unknown", "unknown_cached", "limited", "error"}

// New returns a Server for o, or an error naming what is missing.
func New(o Options) (*Server, error) {
	switch {
	case o.Store == nil:
		return nil, errors.New("api: Options.Store is nil")
	case o.Limiter == nil:
		return nil, errors.New("api: Options.Limiter is nil")
	case o.Registry == nil:
		return nil, errors.New("api: Options.Registry is nil")
	case o.MaxBodyBytes < 0:
		return nil, fmt.Errorf("api: Options.MaxBodyBytes %d is negative", o.MaxBodyBytes)
	case o.KeyCache.ValidTTL < 0, o.KeyCache.UnknownTTL < 0, o.KeyCache.ValidSize < 0, o.KeyCache.UnknownSize < 0:
		return nil, fmt.Errorf("api: Options.KeyCache %+v has a negative field", o.KeyCache)
	}
	s := &Server{
		store:    o.Store,
		limiter:  o.Limiter,
		conflict: slices.Clone(o.ConflictRefund),
		workers:  o.Workers,
		registry: o.Registry,
		ready:    append([]Check{{Name: "database", Ping: o.Store.Ping}}, o.Ready...),
		maxBody:  o.MaxBodyBytes,
		log:      o.Logger,

		authFail:        o.AuthFailures,
		clientIP:        o.ClientIP,
		peerIP:          httplimit.ClientIP(),
		checkTimeout:    o.CheckTimeout,
		keys:            auth.NewCache(o.KeyCache),
		separateMetrics: o.SeparateMetrics,
	}
	if s.clientIP == nil {
		s.clientIP = s.peerIP
	}
	if s.checkTimeout == 0 {
		s.checkTimeout = httplimit.DefaultTimeout
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.submits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "taskd_task_submits_total",
		Help: "Task submissions (POST /v1/tasks) that reached the handler, by outcome: accepted, replayed (a retry with the Idempotency-Key of an earlier submit, answered with its task), conflict (the user has an active task), key_reused (422: the Idempotency-Key was used for another request), invalid (400, 413, 415) or error.",
	}, []string{"outcome"})
	if err := o.Registry.Register(s.submits); err != nil {
		return nil, fmt.Errorf("api: register metrics: %w", err)
	}
	for _, o := range []string{"accepted", "replayed", "conflict", "key_reused", "invalid", "error"} {
		s.submits.WithLabelValues(o)
	}
	if err := s.registerAuthMetrics(o.Registry); err != nil {
		return nil, fmt.Errorf("api: register metrics: %w", err)
	}
	return s, nil
}

func (s *Server) registerAuthMetrics(reg prometheus.Registerer) error {
	s.authResults = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "taskd_auth_requests_total",
		Help: "Authentications of /v1/ requests, by result: valid (looked up), valid_cached, no_key (missing or malformed), unknown (looked up), unknown_cached, limited (429: the address failed too often), error (503: the lookup failed).",
	}, []string{"result"})
	for _, r := range authResults {
		s.authResults.WithLabelValues(r)
	}
	cs := []prometheus.Collector{s.authResults}
	for _, kind := range []string{"valid", "unknown"} {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "taskd_auth_key_cache_entries",
			Help:        "API key lookups held in the key cache, by kind: valid (with their user, fresh or stale) and unknown.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 {
			v, u := s.keys.Len()
			if kind == "valid" {
				return float64(v)
			}
			return float64(u)
		}))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Route is one endpoint of the API.
type Route struct {
	Method string // GET or POST; a GET route also answers HEAD
	Path   string // a ServeMux path pattern, such as /v1/tasks/{id}
	// Auth says whether the route needs an API key (and is rate limited).
	Auth bool
}

type route struct {
	Route
	handler http.HandlerFunc
}

// table lists the routes with their handlers. Routes calls it with a nil
// Server, whose method values are never called.
func (s *Server) table() []route {
	return []route{
		{Route{"POST", "/v1/tasks", true}, s.createTask},
		{Route{"GET", "/v1/tasks", true}, s.listTasks},
		{Route{"GET", "/v1/tasks/{id}", true}, s.getTask},
		{Route{"POST", "/v1/tasks/{id}/cancel", true}, s.cancelTask},
		{Route{"GET", "/v1/ratelimit", true}, s.rateLimit},
		{Route{"GET", "/healthz", false}, s.healthz},
		{Route{"GET", "/readyz", false}, s.readyz},
		{Route{"GET", "/metrics", false}, s.metrics},
	}
}

// Routes returns every route the Handler serves, in a fixed order. The
// OpenAPI description of the service is checked against it.
func Routes() []Route {
	var s *Server
	t := s.table()
	out := make([]Route, len(t))
	for i, r := range t {
		out[i] = r.Route
	}
	return out
}

// Handler returns the API's handler, with authentication and the rate
// limiter in front of the routes that need them, and a log line per request.
func (s *Server) Handler() http.Handler {
	root := http.NewServeMux()
	v1 := http.NewServeMux()
	methods := map[string][]string{}
	var paths []string
	table := s.table()
	if s.separateMetrics {
		table = slices.DeleteFunc(table, func(rt route) bool { return rt.Path == "/metrics" })
		root.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
			problemf(w, r, http.StatusNotFound, "Metrics are served on the metrics address (taskd serve -metrics-addr), not here.")
		})
	}
	for _, rt := range table {
		pattern := rt.Method + " " + rt.Path
		if rt.Auth {
			v1.Handle(pattern, rt.handler)
		} else {
			root.Handle(pattern, rt.handler)
		}
		if _, ok := methods[rt.Path]; !ok {
			paths = append(paths, rt.Path)
		}
		methods[rt.Path] = append(methods[rt.Path], rt.Method)
	}
	// ServeMux's own 404 and 405 answers are plain text; these make them
	// problems. A pattern without a method loses to one with a method.
	for _, p := range paths {
		allow := methods[p]
		if slices.Contains(allow, "GET") {
			allow = append(allow, "HEAD")
		}
		h := methodNotAllowed(strings.Join(allow, ", "))
		if slices.ContainsFunc(table, func(rt route) bool { return rt.Path == p && rt.Auth }) {
			v1.Handle(p, h)
		} else {
			root.Handle(p, h)
		}
	}
	notFound := func(w http.ResponseWriter, r *http.Request) {
		problemf(w, r, http.StatusNotFound, fmt.Sprintf("No endpoint %s %s; see GET /v1/tasks, POST /v1/tasks and GET /v1/ratelimit.", r.Method, r.URL.Path))
	}
	v1.HandleFunc("/", notFound)
	root.Handle("/v1/", s.authenticate(s.limiter.Handler(v1)))
	// Any other path is not found, without authentication: a browser's
	// /favicon.ico or a scanner must not spend the failed authentications
	// of everyone behind its address.
	root.HandleFunc("/", notFound)
	return s.accessLog(root)
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		problemf(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; allowed: %s.", r.Method, r.URL.Path, allow))
	}
}

// authenticate puts the user of the request's API key into its context, or
// answers 401 (no, a malformed or an unknown key), 429 (the client's address
// failed authentication too often) or 503 (the key could not be looked up).
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, ok := s.authUser(w, r)
		if !ok {
			return
		}
		if rec, ok := w.(*statusRecorder); ok {
			rec.user = user
		}
		next.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), user)))
	})
}

const unknownKeyDetail = "Unknown API key; create one with: taskd keys create -user NAME."

// authUser returns the user of the request's API key, or answers the
// request and returns false.
//
// A key the cache holds as valid is let in, and one it holds as unknown is
// a failure, without a lookup. A key the cache has never seen is looked up
// unless the address is over the limit (429, no lookup), and charged as a
// failure only when it is not found. A stale key, found valid before, is
// looked up without a peek: an address over the limit still gets the keys
// it used checked.
func (s *Server) authUser(w http.ResponseWriter, r *http.Request) (string, bool) {
	key, err := auth.Bearer(r)
	if err != nil {
		s.authFailed(w, r, "no_key", upperFirst(err.Error())+".")
		return "", false
	}
	hash := auth.Hash(key)
	user, cached := s.keys.Get(hash)
	switch cached {
	case auth.Valid:
		s.authResults.WithLabelValues("valid_cached").Inc()
		return user, true
	case auth.Unknown:
		s.authFailed(w, r, "unknown_cached", unknownKeyDetail)
		return "", false
	}
	var charge *allowance.Receipt
	if cached == auth.Miss && s.overFailureLimit(r) {
		// A check, denied and charging nothing, gives the 429 its numbers.
		var ok bool
		if charge, ok = s.chargeFailure(w, r); !ok {
			return "", false
		}
		// The window moved on since the peek: the check charged, and the
		// charge is refunded below if the key is found.
	}
	user, err = s.store.UserByAPIKey(r.Context(), hash)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		s.keys.PutUnknown(hash)
		if charge != nil {
			s.authResults.WithLabelValues("unknown").Inc()
			unauthorized(w, r, unknownKeyDetail)
		} else {
			s.authFailed(w, r, "unknown", unknownKeyDetail)
		}
		return "", false
	case err != nil:
		s.refundFailure(r, charge)
		s.log.ErrorContext(r.Context(), "look up API key", "err", err)
		s.authResults.WithLabelValues("error").Inc()
		problemf(w, r, http.StatusServiceUnavailable, "Cannot check the API key now; try again shortly.")
		return "", false
	}
	s.refundFailure(r, charge)
	s.keys.PutValid(hash, user)
	s.authResults.WithLabelValues("valid").Inc()
	return user, true
}

// authFailed charges a failed authentication to the client's address and
// answers 401, or 429 when the address is over the limit.
func (s *Server) authFailed(w http.ResponseWriter, r *http.Request, result, detail string) {
	if _, ok := s.chargeFailure(w, r); !ok {
		return
	}
	s.authResults.WithLabelValues(result).Inc()
	unauthorized(w, r, detail)
}

// overFailureLimit reports whether the client's address has no failed
// authentication left, by a Peek that charges nothing: a key the cache has
// not seen is then answered 429 without a lookup. When the limits store
// fails it reports false.
func (s *Server) overFailureLimit(r *http.Request) bool {
	if s.authFail == nil {
		return false
	}
	id, ok := s.failureIdentity(r)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.checkTimeout)
	defer cancel()
	u, err := s.authFail.Peek(ctx, id)
	if err != nil {
		s.log.WarnContext(r.Context(), "limit failed authentications: the limits store failed; not limiting this request", "identity", id, "err", err)
		return false
	}
	for _, x := range u {
		if x.Remaining < 1 {
			return true
		}
	}
	return false
}

// failureIdentity is the identity failed authentications of r are charged
// to: "ip:" and the client's address, or the peer's when a trusted proxy
// sent none that can be read. It reports false when there is none.
func (s *Server) failureIdentity(r *http.Request) (string, bool) {
	ip, err := s.clientIP(r)
	if err != nil || ip == "" {
		// A trusted proxy sent a forwarded address that cannot be read
		// (proxies append the peer they saw, so a client cannot cause
		// this): charge the proxy itself.
		s.log.DebugContext(r.Context(), "limit failed authentications: no client address in the forwarding headers; charging the peer", "err", err)
		if ip, err = s.peerIP(r); err != nil {
			s.log.WarnContext(r.Context(), "limit failed authentications: no client address; not limiting this request", "err", err)
			return "", false
		}
	}
	return "ip:" + ip, true
}

// chargeFailure charges one failed authentication to the client's address.
// It returns the receipt to refund should the request not fail after all
// (nil when nothing was charged), or false after answering 429 (the address
// is over the limit). When the limits store fails, nothing is charged and
// the request goes on.
func (s *Server) chargeFailure(w http.ResponseWriter, r *http.Request) (*allowance.Receipt, bool) {
	if s.authFail == nil {
		return nil, true
	}
	id, ok := s.failureIdentity(r)
	if !ok {
		return nil, true
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.checkTimeout)
	defer cancel()
	d, err := s.authFail.Check(ctx, id)
	if err != nil {
		s.log.WarnContext(r.Context(), "limit failed authentications: the limits store failed; not limiting this request", "identity", id, "err", err)
		return nil, true
	}
	if !d.Allowed {
		s.authResults.WithLabelValues("limited").Inc()
		writeAuthLimited(w, r, &d)
		return nil, false
	}
	return &d.Receipt, true
}

// refundFailure gives back the failure charged for a key that turned out
// valid (or could not be looked up). A nil receipt refunds nothing.
func (s *Server) refundFailure(r *http.Request, rc *allowance.Receipt) {
	if rc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.checkTimeout)
	defer cancel()
	if _, err := s.authFail.Refund(ctx, rc); err != nil {
		s.log.WarnContext(r.Context(), "limit failed authentications: refund of a valid key's charge failed", "err", err)
	}
}

// typeAuthFailures is the problem type of a 429 for too many failed
// authentications.
const typeAuthFailures = "/problems/auth-failures"

// authLimitedProblem is the body of a 429 for too many failed
// authentications: a Problem with the members of the rate limiter's 429s.
type authLimitedProblem struct {
	Problem
	Rule       string `json:"rule"`
	Limit      string `json:"limit"`
	RetryAfter int64  `json:"retry_after"`
}

// writeAuthLimited answers 429 for a client address over the limit of
// failed authentications, with Retry-After in whole seconds (at least 1).
func writeAuthLimited(w http.ResponseWriter, r *http.Request, d *allowance.Decision) {
	retry := max(int64((d.RetryAfter+time.Second-1)/time.Second), 1)
	limit := d.State(d.MostRestrictive()).Limit.String()
	p := authLimitedProblem{
		Problem: Problem{
			Type:     typeAuthFailures,
			Title:    "Too many failed authentications",
			Status:   http.StatusTooManyRequests,
			Detail:   fmt.Sprintf("This address failed authentication too often (%s); retry in %d seconds. API keys used successfully before keep working.", limit, retry),
			Instance: r.URL.Path,
		},
		Rule:       AuthFailureRuleName,
		Limit:      limit,
		RetryAfter: retry,
	}
	b, _ := marshal(p) // strings and integers: cannot fail
	h := w.Header()
	h.Set("Retry-After", strconv.FormatInt(retry, 10))
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write(b)
}

func unauthorized(w http.ResponseWriter, r *http.Request, detail string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="taskd"`)
	problemf(w, r, http.StatusUnauthorized, detail)
}

// user returns the authenticated user of r; authenticate guarantees one.
func user(r *http.Request) string {
	u, _ := auth.UserFrom(r.Context())
	return u
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyTimeout bounds each readiness check.
const readyTimeout = 2 * time.Second

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	results := make(map[string]string, len(s.ready))
	var failed []string
	for _, c := range s.ready {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		err := c.Ping(ctx)
		cancel()
		if err != nil {
			// The endpoint is public: the error, which may name hosts,
			// goes to the log only.
			s.log.WarnContext(r.Context(), "not ready", "check", c.Name, "err", err)
			results[c.Name] = "failed"
			failed = append(failed, c.Name)
			continue
		}
		results[c.Name] = "ok"
	}
	if len(failed) > 0 {
		problemf(w, r, http.StatusServiceUnavailable, "Not ready: "+strings.Join(failed, ", ")+" did not answer; see the server's log.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": results})
}

// MetricsHandler returns a handler of GET /metrics alone, for a listener of
// its own (Options.SeparateMetrics); it answers anything else 404.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.Handle("/metrics", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problemf(w, r, http.StatusNotFound, fmt.Sprintf("No endpoint %s %s; this address serves GET /metrics only.", r.Method, r.URL.Path))
	})
	return s.accessLog(mux)
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)}).ServeHTTP(w, r)
}

// statusRecorder remembers a response's status for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	user   string
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog logs each request at INFO (DEBUG for health, readiness and
// metrics, which are polled).
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		level := slog.LevelInfo
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			level = slog.LevelDebug
		}
		s.log.LogAttrs(r.Context(), level, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", max(rec.status, http.StatusOK)),
			slog.String("user", rec.user),
			slog.Duration("duration", time.Since(start)),
		)
	})
}
