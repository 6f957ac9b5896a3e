package config

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Route is an endpoint of the service that the rules' patterns are checked
// against (see WithRoutes): a method and a net/http ServeMux path pattern,
// such as GET and /v1/tasks/{id}. A GET route also answers HEAD.
type Route struct {
	Method string
	Path   string
}

// String returns the route as "METHOD PATH".
func (r Route) String() string { return r.Method + " " + r.Path }

// Option changes how Parse and Load check a configuration.
type Option func(*options)

type options struct {
	routes []Route
}

// WithRoutes makes Parse and Load refuse a rule whose match pattern can
// match no request that one of routes serves: a rule that would never
// charge anything, such as "GET /v1/task" (for /v1/tasks), "post /v1/tasks"
// (methods are case-sensitive) or "GET /healthz" when /healthz is not among
// routes. Pass the routes the rate limiter is in front of. Without this
// option patterns are only checked for their syntax and for a host part.
func WithRoutes(routes ...Route) Option {
	return func(o *options) { o.routes = slices.Clone(routes) }
}

// splitPattern splits a ServeMux pattern into its method, host and path the
// way net/http reads it: the method is the text before the first space or
// tab (none without one), the host the text from there to the first '/'.
func splitPattern(pattern string) (method, host, path string) {
	rest := pattern
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		method, rest = pattern[:i], strings.TrimLeft(pattern[i+1:], " \t")
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return method, rest, ""
	}
	return method, rest[:i], rest[i:]
}

// joinPattern is the inverse of splitPattern for a pattern without a host.
func joinPattern(method, path string) string {
	if method == "" {
		return path
	}
	return method + " " + path
}

// checkHost refuses a pattern with a host part. net/http reads the text
// before a pattern's first '/' as a host, so "POST v1/tasks" matches path
// /tasks on host v1 only: in taskd, where a client may use any host name,
// that is a slip that turns the rule off, never a deliberate choice. The
// error shows the pattern to write instead: the one that matches a route
// when routes are known, else the one that keeps every path segment.
func checkHost(pattern string, routes []Route) error {
	method, host, path := splitPattern(pattern)
	if host == "" {
		return nil
	}
	withSlash := joinPattern(method, "/"+host+path) // "POST v1/tasks": a missing slash
	withoutHost := joinPattern(method, path)        // "POST api.example.com/v1/tasks": a host
	fix := withSlash
	if strings.ContainsAny(host, ".:") || (len(routes) > 0 && matchesNone(withSlash, routes) && !matchesNone(withoutHost, routes)) {
		fix = withoutHost
	}
	return fmt.Errorf("route pattern %q has the host part %q: net/http reads the text before the first '/' as a host, "+
		"so the rule would match only requests for host %q; taskd's rules match paths, on any host: write %q",
		pattern, host, host, fix)
}

// checkRoutes refuses a pattern that matches no request one of routes
// serves, listing the routes.
func checkRoutes(pattern string, routes []Route) error {
	if len(routes) == 0 || !matchesNone(pattern, routes) {
		return nil
	}
	method, _, path := splitPattern(pattern)
	hint := ""
	if up := strings.ToUpper(method); up != method && !matchesNone(joinPattern(up, path), routes) {
		hint = fmt.Sprintf(" (methods are case-sensitive: write %q)", joinPattern(up, path))
	}
	list := make([]string, len(routes))
	for i, r := range routes {
		list[i] = r.String()
	}
	return fmt.Errorf("route pattern %q matches none of the rate-limited routes, so the rule would never charge anything%s; "+
		"expected a pattern that matches at least one of %s (a method-less pattern matches every method, one ending in / every path below it)",
		pattern, hint, strings.Join(list, ", "))
}

// matchesNone reports whether pattern matches no request that one of routes
// serves. For each route it builds the request most likely to be matched by
// both (a path that takes the pattern's literal segments where the route has
// a wildcard and the route's where the pattern has one) and asks net/http
// whether the pattern matches it and whether a mux of all the routes sends
// it to that route. Both answers come from ServeMux itself, so a pattern
// reported to match some route does; the constructed request is a witness.
func matchesNone(pattern string, routes []Route) bool {
	pm, ok := mux(pattern)
	if !ok {
		return true
	}
	rm := http.NewServeMux()
	for _, r := range routes {
		if !muxHandle(rm, r.String()) {
			return true
		}
	}
	method, host, path := splitPattern(pattern)
	for _, r := range routes {
		m, ok := requestMethod(method, r.Method)
		if !ok {
			continue
		}
		for _, p := range witnessPaths(segments(path), segments(r.Path)) {
			req := &http.Request{Method: m, Host: host, URL: &url.URL{Path: p}}
			if host == "" {
				req.Host = "localhost"
			}
			if _, got := pm.Handler(req); got != pattern {
				continue
			}
			if _, got := rm.Handler(req); got == r.String() {
				return false
			}
		}
	}
	return true
}

// matchesSubmit reports whether pattern matches the task submit,
// POST /v1/tasks. (Rules' patterns name no host; see checkHost.)
func matchesSubmit(pattern string) bool {
	m, ok := mux(pattern)
	if !ok {
		return false
	}
	req := &http.Request{Method: http.MethodPost, Host: "localhost", URL: &url.URL{Path: "/v1/tasks"}}
	_, p := m.Handler(req)
	return p != ""
}

// mux returns a ServeMux with pattern alone, or false when it is invalid.
func mux(pattern string) (*http.ServeMux, bool) {
	m := http.NewServeMux()
	return m, muxHandle(m, pattern)
}

// muxHandle registers pattern on m, reporting false when ServeMux refuses it
// (it panics).
func muxHandle(m *http.ServeMux, pattern string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	m.Handle(pattern, http.NotFoundHandler())
	return true
}

// requestMethod returns the method of a request that both a pattern of
// method pm (any method when empty) and a route of method rm serve.
func requestMethod(pm, rm string) (string, bool) {
	switch {
	case pm == "", pm == rm:
		return rm, true
	case pm == http.MethodHead && rm == http.MethodGet:
		return http.MethodHead, true
	}
	return "", false
}

// segment is one segment of a ServeMux path pattern.
type segment struct {
	lit   string // the literal text, when neither wild nor multi
	wild  bool   // {name}: one segment
	multi bool   // {name...} or a trailing slash: the rest of the path
}

// segments splits a ServeMux path pattern into its segments: "/v1/" is v1
// and a multi, "/v1/{$}" v1 and an empty literal (the path ends in a
// slash).
func segments(path string) []segment {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	out := make([]segment, len(parts))
	for i, p := range parts {
		last := i == len(parts)-1
		switch {
		case p == "{$}":
			out[i] = segment{}
		case last && p == "":
			out[i] = segment{multi: true}
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "...}"):
			out[i] = segment{multi: true}
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
			out[i] = segment{wild: true}
		default:
			out[i] = segment{lit: p}
		}
	}
	return out
}

// witnessPaths returns request paths that patterns of segments a and b may
// both match: the unification of the two, when there is one.
func witnessPaths(a, b []segment) []string {
	var parts []string
	for {
		switch {
		case len(a) == 0 && len(b) == 0:
			return []string{"/" + strings.Join(parts, "/")}
		case len(a) > 0 && a[0].multi && len(b) > 0:
			return []string{"/" + strings.Join(append(parts, realize(b)...), "/")}
		case len(b) > 0 && b[0].multi && len(a) > 0:
			return []string{"/" + strings.Join(append(parts, realize(a)...), "/")}
		case len(a) == 0 || len(b) == 0:
			return nil
		case a[0].wild && b[0].wild:
			parts = append(parts, "x")
		case a[0].wild:
			parts = append(parts, b[0].lit)
		case b[0].wild, a[0].lit == b[0].lit:
			parts = append(parts, a[0].lit)
		default:
			return nil
		}
		a, b = a[1:], b[1:]
	}
}

// realize returns path segments that segments s match.
func realize(s []segment) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = x.lit
		if x.wild || x.multi {
			out[i] = "x"
		}
	}
	return out
}
