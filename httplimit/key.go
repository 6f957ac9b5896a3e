package httplimit

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// KeyFunc finds the identity a request is charged to: a user id, an API key's
// id, an IP address. It returns "" and a nil error when the request has no
// identity; the middleware then applies Config.Anonymous, never a shared
// empty key. An error means the request is malformed; the middleware answers
// 400 Bad Request with the error's text.
type KeyFunc func(r *http.Request) (string, error)

// FromContext returns a KeyFunc that reads the identity an authentication
// middleware put in the request's context, through f (for example a
// function wrapping ctx.Value of the auth package's key). f reporting false,
// or an empty identity, means no identity.
func FromContext(f func(ctx context.Context) (string, bool)) KeyFunc {
	return func(r *http.Request) (string, error) {
		id, ok := f(r.Context())
		if !ok {
			return "", nil
		}
		return id, nil
	}
}

// FromHeader returns a KeyFunc that uses the value of the request header
// name, without surrounding spaces, as the identity. A missing or blank
// header means no identity. Use it only behind something that authenticates
// the header (an API gateway), or for keys that are themselves secrets.
func FromHeader(name string) KeyFunc {
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request) (string, error) {
		v := r.Header[name]
		if len(v) == 0 {
			return "", nil
		}
		return strings.TrimSpace(v[0]), nil
	}
}

// ClientIP returns a KeyFunc that uses the client's IP address as the
// identity, in netip.Addr's text form ("192.0.2.1", "2001:db8::1";
// IPv4-mapped IPv6 addresses as IPv4).
//
// The client is the peer of the connection (Request.RemoteAddr) unless that
// peer is in one of trustedProxies. Only then are the Forwarded (RFC 7239)
// header's for= parameters, or when it is absent X-Forwarded-For, read: from
// the nearest hop back, the first address not in trustedProxies is the
// client. A hop that is not an IP address (Forwarded's "unknown" or an
// obfuscated identifier) ends the walk with an error, since the middleware
// cannot tell clients behind it apart. With no trusted proxies the headers
// are ignored, as any client can set them.
func ClientIP(trustedProxies ...netip.Prefix) KeyFunc {
	trusted := append([]netip.Prefix(nil), trustedProxies...)
	for i, p := range trusted {
		trusted[i] = p.Masked()
	}
	return func(r *http.Request) (string, error) {
		a, err := clientAddr(r, trusted)
		if err != nil {
			return "", err
		}
		return a.String(), nil
	}
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr finds the client's address as ClientIP describes.
func clientAddr(r *http.Request, trusted []netip.Prefix) (netip.Addr, error) {
	peer, err := parseHostAddr(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("client address %q: %w", r.RemoteAddr, err)
	}
	if len(trusted) == 0 || !isTrusted(peer, trusted) {
		return peer, nil
	}
	var hops []string
	if fw := r.Header.Values("Forwarded"); len(fw) > 0 {
		hops, err = forwardedFor(fw)
		if err != nil {
			return netip.Addr{}, err
		}
	} else {
		for _, v := range r.Header.Values("X-Forwarded-For") {
			for h := range strings.SplitSeq(v, ",") {
				hops = append(hops, strings.TrimSpace(h))
			}
		}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := parseHostAddr(hops[i])
		if err != nil {
			return netip.Addr{}, fmt.Errorf("forwarded client address %q (hop %d of %d): %w", hops[i], len(hops)-i, len(hops), err)
		}
		client = a
		if !isTrusted(a, trusted) {
			break
		}
	}
	return client, nil
}

// parseHostAddr parses an IP address, optionally with a port, IPv6 in
// brackets when it has one: "192.0.2.1", "192.0.2.1:80", "2001:db8::1",
// "[2001:db8::1]:80". IPv4-mapped IPv6 addresses come back as IPv4.
func parseHostAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, fmt.Errorf("empty address; expected an IP address")
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), nil
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() && a.Zone() == "" {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("expected an IP address, optionally with a port")
}

// forwardedFor returns the for= values of the Forwarded header fields, in
// order, unquoted. Each element must have exactly one for= parameter.
func forwardedFor(fields []string) ([]string, error) {
	var out []string
	for _, f := range fields {
		elems, err := splitQuoted(f, ',')
		if err != nil {
			return nil, fmt.Errorf("forwarded header %q: %w", f, err)
		}
		for _, e := range elems {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			pairs, err := splitQuoted(e, ';')
			if err != nil {
				return nil, fmt.Errorf("forwarded header %q: %w", f, err)
			}
			var (
				val   string
				found bool
			)
			for _, p := range pairs {
				k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok {
					return nil, fmt.Errorf("forwarded header %q: parameter %q: expected name=value", f, p)
				}
				if !strings.EqualFold(strings.TrimSpace(k), "for") {
					continue
				}
				if found {
					return nil, fmt.Errorf("forwarded header %q: element %q has two for= parameters", f, e)
				}
				found = true
				val, err = unquote(strings.TrimSpace(v))
				if err != nil {
					return nil, fmt.Errorf("forwarded header %q: for=%s: %w", f, v, err)
				}
			}
			if !found {
				return nil, fmt.Errorf("forwarded header %q: element %q has no for= parameter", f, e)
			}
			out = append(out, val)
		}
	}
	return out, nil
}

// splitQuoted splits s at sep outside double-quoted strings.
func splitQuoted(s string, sep byte) ([]string, error) {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quoted string")
	}
	return append(out, s[start:]), nil
}

// unquote removes the double quotes and backslash escapes of an HTTP
// quoted-string; a token is returned as is.
func unquote(s string) (string, error) {
	if len(s) == 0 || s[0] != '"' {
		return s, nil
	}
	if len(s) < 2 || s[len(s)-1] != '"' {
		return "", fmt.Errorf("unterminated quoted string")
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		if c == '\\' {
			i++
			if i == len(s)-1 {
				return "", fmt.Errorf("dangling backslash in quoted string")
			}
			c = s[i]
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}
