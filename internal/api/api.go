// Package api is taskd's HTTP API: the task endpoints under /v1/, the
// rate-limit usage endpoint, health, readiness and metrics.
//
// Requests to /v1/ go through, in order: authentication (an API key in
// "Authorization: Bearer <key>", resolved to a user id put in the context;
// 401 otherwise), the httplimit middleware (which charges that user id), and
// the handler. /healthz, /readyz and /metrics are neither authenticated nor
// rate limited. Every error is application/problem+json (RFC 9457).
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
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/internal/auth"
	"github.com/allowancehq/allowance/tasks"
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
}

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
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.submits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "taskd_task_submits_total",
		Help: "Task submissions (POST /v1/tasks) that reached the handler, by outcome: accepted, conflict (the user has an active task), invalid (400/413) or error.",
	}, []string{"outcome"})
	if err := o.Registry.Register(s.submits); err != nil {
		return nil, fmt.Errorf("api: register metrics: %w", err)
	}
	for _, o := range []string{"accepted", "conflict", "invalid", "error"} {
		s.submits.WithLabelValues(o)
	}
	return s, nil
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
	for _, rt := range s.table() {
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
		if slices.ContainsFunc(s.table(), func(rt route) bool { return rt.Path == p && rt.Auth }) {
			v1.Handle(p, h)
		} else {
			root.Handle(p, h)
		}
	}
	v1.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problemf(w, r, http.StatusNotFound, fmt.Sprintf("No endpoint %s %s; see GET /v1/tasks, POST /v1/tasks and GET /v1/ratelimit.", r.Method, r.URL.Path))
	})
	root.Handle("/", s.authenticate(s.limiter.Handler(v1)))
	return s.accessLog(root)
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		problemf(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; allowed: %s.", r.Method, r.URL.Path, allow))
	}
}

// authenticate puts the user of the request's API key into its context, or
// answers 401.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := auth.Bearer(r)
		if err != nil {
			unauthorized(w, r, upperFirst(err.Error())+".")
			return
		}
		user, err := s.store.UserByAPIKey(r.Context(), auth.Hash(key))
		switch {
		case errors.Is(err, tasks.ErrNotFound):
			unauthorized(w, r, "Unknown API key; create one with: taskd keys create -user NAME.")
			return
		case err != nil:
			s.log.ErrorContext(r.Context(), "look up API key", "err", err)
			problemf(w, r, http.StatusServiceUnavailable, "Cannot check the API key now; try again shortly.")
			return
		}
		if rec, ok := w.(*statusRecorder); ok {
			rec.user = user
		}
		next.ServeHTTP(w, r.WithContext(auth.WithUser(r.Context(), user)))
	})
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
