package auth

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"testing"
)

func TestNewKey(t *testing.T) {
	k1, h1 := NewKey()
	k2, h2 := NewKey()
	if k1 == k2 || bytes.Equal(h1, h2) {
		t.Fatal("two keys are equal")
	}
	if len(h1) != 32 || !bytes.Equal(h1, Hash(k1)) {
		t.Fatalf("hash %x is not the SHA-256 of the key", h1)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+k1)
	got, err := Bearer(r)
	if err != nil || got != k1 {
		t.Fatalf("Bearer = %q, %v; want %q", got, err, k1)
	}
}

func TestBearer(t *testing.T) {
	key, _ := NewKey()
	tests := []struct {
		header string
		want   error
	}{
		{"", ErrNoCredentials},
		{"Basic dXNlcjpwYXNz", ErrMalformedKey},
		{"Bearer", ErrMalformedKey},
		{"Bearer abc", ErrMalformedKey},
		{"Bearer " + key[:len(key)-1], ErrMalformedKey},
		{"Bearer " + key[:len(key)-1] + "!", ErrMalformedKey},
		{"Bearer xx" + key[2:], ErrMalformedKey},
		{"bearer " + key, nil},
		{"Bearer  " + key + " ", nil},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		got, err := Bearer(r)
		if !errors.Is(err, tt.want) {
			t.Errorf("Bearer(%q) error = %v, want %v", tt.header, err, tt.want)
		}
		if err == nil && got != key {
			t.Errorf("Bearer(%q) = %q, want %q", tt.header, got, key)
		}
	}
}

func TestValidUser(t *testing.T) {
	for _, ok := range []string{"alice", "a", "bob.smith@example.com", "u_1-2"} {
		if err := ValidUser(ok); err != nil {
			t.Errorf("ValidUser(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "ünï", "a{b}", string(make([]byte, 65))} {
		if err := ValidUser(bad); err == nil {
			t.Errorf("ValidUser(%q) = nil, want an error", bad)
		}
	}
}

func TestUserContext(t *testing.T) {
	if _, ok := UserFrom(context.Background()); ok {
		t.Error("UserFrom of an empty context reported a user")
	}
	if _, ok := UserFrom(WithUser(context.Background(), "")); ok {
		t.Error("UserFrom reported the empty user")
	}
	if u, ok := UserFrom(WithUser(context.Background(), "alice")); !ok || u != "alice" {
		t.Errorf("UserFrom = %q, %v", u, ok)
	}
}

func FuzzBearer(f *testing.F) {
	key, _ := NewKey()
	f.Add("Bearer " + key)
	f.Add("Bearer tk_")
	f.Add("Basic x")
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Authorization"] = []string{h}
		k, err := Bearer(r)
		if err == nil && (len(k) != keyLen || k[:3] != KeyPrefix) {
			t.Fatalf("Bearer(%q) accepted %q", h, k)
		}
	})
}
