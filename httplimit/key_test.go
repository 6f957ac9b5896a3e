package httplimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientIP(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name    string
		remote  string
		trusted []netip.Prefix
		headers map[string][]string
		want    string
		wantErr string
	}{
		{name: "peer", remote: "192.0.2.1:1234", want: "192.0.2.1"},
		{name: "peer ipv6", remote: "[2001:db8::1]:80", want: "2001:db8::1"},
		{name: "peer mapped", remote: "[::ffff:192.0.2.1]:80", want: "192.0.2.1"},
		{name: "peer without port", remote: "192.0.2.1", want: "192.0.2.1"},
		{name: "untrusted peer's header ignored", remote: "192.0.2.1:1", headers: map[string][]string{"X-Forwarded-For": {"198.51.100.7"}}, want: "192.0.2.1"},
		{name: "no proxies configured: header ignored", remote: "10.0.0.1:1", trusted: []netip.Prefix{}, headers: map[string][]string{"X-Forwarded-For": {"198.51.100.7"}}, want: "10.0.0.1"},
		{name: "xff one hop", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"X-Forwarded-For": {"198.51.100.7"}}, want: "198.51.100.7"},
		{name: "xff spoofed left part skipped", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7, 10.1.1.1"}}, want: "198.51.100.7"},
		{name: "xff several fields", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"X-Forwarded-For": {"6.6.6.6", "198.51.100.7, 10.1.1.1"}}, want: "198.51.100.7"},
		{name: "xff all trusted: leftmost", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"X-Forwarded-For": {"10.2.2.2, 10.1.1.1"}}, want: "10.2.2.2"},
		{name: "xff absent: peer", remote: "10.0.0.1:1", trusted: proxies, want: "10.0.0.1"},
		{name: "xff garbage", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"X-Forwarded-For": {"not-an-ip"}}, wantErr: `forwarded client address "not-an-ip"`},
		{name: "forwarded", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"Forwarded": {`for=198.51.100.7;proto=https, for="[fd00::1]:443"`}}, want: "198.51.100.7"},
		{name: "forwarded ipv6 quoted", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"Forwarded": {`for="[2001:db8:cafe::17]:4711"`}}, want: "2001:db8:cafe::17"},
		{name: "forwarded wins over xff", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"Forwarded": {"For=198.51.100.7"}, "X-Forwarded-For": {"203.0.113.9"}}, want: "198.51.100.7"},
		{name: "forwarded unknown", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"Forwarded": {"for=unknown"}}, wantErr: `"unknown"`},
		{name: "forwarded no for", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"Forwarded": {"proto=https"}}, wantErr: "no for= parameter"},
		{name: "forwarded unterminated quote", remote: "10.0.0.1:1", trusted: proxies, headers: map[string][]string{"Forwarded": {`for="198.51.100.7`}}, wantErr: "unterminated"},
		{name: "bad remote", remote: "nonsense", wantErr: `client address "nonsense"`},
		{name: "zone rejected", remote: "[fe80::1%eth0]:80", wantErr: "client address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remote
			for k, vs := range tt.headers {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			got, err := ClientIP(tt.trusted...)(r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ClientIP = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ClientIP = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestFromHeader(t *testing.T) {
	k := FromHeader("x-api-key")
	r := httptest.NewRequest("GET", "/", nil)
	if id, err := k(r); id != "" || err != nil {
		t.Fatalf("missing header: %q, %v; want no identity", id, err)
	}
	r.Header.Set("X-Api-Key", "  ")
	if id, err := k(r); id != "" || err != nil {
		t.Fatalf("blank header: %q, %v; want no identity", id, err)
	}
	r.Header.Set("X-Api-Key", " k1 ")
	if id, err := k(r); id != "k1" || err != nil {
		t.Fatalf("header: %q, %v; want k1", id, err)
	}
}

type userKey struct{}

func TestFromContext(t *testing.T) {
	k := FromContext(func(ctx context.Context) (string, bool) {
		u, ok := ctx.Value(userKey{}).(string)
		return u, ok
	})
	r := httptest.NewRequest("GET", "/", nil)
	if id, err := k(r); id != "" || err != nil {
		t.Fatalf("no user: %q, %v; want no identity", id, err)
	}
	r = r.WithContext(context.WithValue(r.Context(), userKey{}, "alice"))
	if id, err := k(r); id != "alice" || err != nil {
		t.Fatalf("user: %q, %v; want alice", id, err)
	}
}

// FuzzClientIP feeds arbitrary forwarding headers from a trusted proxy: the
// result is an error or a valid address, and never a trusted proxy's address
// when an untrusted one was given.
func FuzzClientIP(f *testing.F) {
	f.Add(`for=198.51.100.7;proto=https, for="[fd00::1]:443"`, "198.51.100.7, 10.1.1.1")
	f.Add(`for="\"x"`, "")
	f.Add(`for=unknown`, ",,")
	f.Add(`;;,"`, "[::1]:80")
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, fwd, xff string) {
		r := &http.Request{RemoteAddr: "10.0.0.1:9", Header: http.Header{}}
		if fwd != "" {
			r.Header.Set("Forwarded", fwd)
		}
		r.Header.Set("X-Forwarded-For", xff)
		got, err := ClientIP(trusted...)(r)
		if err != nil {
			return
		}
		if _, perr := netip.ParseAddr(got); perr != nil {
			t.Fatalf("ClientIP = %q, which is not an address: %v", got, perr)
		}
	})
}
