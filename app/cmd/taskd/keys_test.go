package main

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance/app/internal/api"
	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/internal/config"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
	"github.com/allowancehq/allowance/app/tasks/storetest"
	"github.com/allowancehq/allowance/memstore"
)

// keyCLI runs a taskd keys command and fails the test unless it exits
// with want.
func keyCLI(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := runCLI(t, nil, append([]string{"keys"}, args...)...)
	if code != want {
		t.Fatalf("taskd keys %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stdout, stderr
}

// newKey runs taskd keys create (or rotate) and returns the key it prints.
func newKey(t *testing.T, args ...string) string {
	t.Helper()
	out, _ := keyCLI(t, 0, args...)
	key := strings.TrimSpace(out)
	if !strings.HasPrefix(key, auth.KeyPrefix) || strings.Contains(key, "\n") {
		t.Fatalf("taskd keys %s printed %q; want one key", strings.Join(args, " "), out)
	}
	return key
}

func TestKeysCommands(t *testing.T) {
	db := "sqlite:" + filepath.Join(t.TempDir(), "tasks.db")
	alice := newKey(t, "create", "-user", "alice", "-db", db)
	bob := newKey(t, "create", "-user", "bob", "-db", db)
	aliceID, bobID := tasks.APIKeyID(auth.Hash(alice)), tasks.APIKeyID(auth.Hash(bob))

	out, _ := keyCLI(t, 0, "list", "-db", db)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^USER\s+KEY_ID\s+CREATED\s+LAST_USED\s+EXPIRES$`).MatchString(lines[0]) {
		t.Fatalf("keys list =\n%s\nwant a header and two keys", out)
	}
	for i, want := range []string{`^alice\s+` + aliceID + `\s+\d{4}-\d\d-\d\dT\S+Z\s+never\s+-$`, `^bob\s+` + bobID + `\s`} {
		if !regexp.MustCompile(want).MatchString(lines[i+1]) {
			t.Errorf("keys list line %q does not match %s", lines[i+1], want)
		}
	}
	if strings.Contains(out, auth.KeyPrefix) {
		t.Errorf("keys list shows a secret:\n%s", out)
	}
	if out, _ := keyCLI(t, 0, "list", "-user", "bob", "-db", db); strings.Contains(out, "alice") || !strings.Contains(out, bobID) {
		t.Errorf("keys list -user bob =\n%s", out)
	}

	// Rotation: a new key; the old one gets an expiry.
	alice2 := newKey(t, "rotate", "-user", "alice", "-grace", "2h", "-db", db)
	out, _ = keyCLI(t, 0, "list", "-user", "alice", "-db", db)
	if !regexp.MustCompile(aliceID+`.*never\s+\d{4}-\S+Z\n`).MatchString(out) ||
		!strings.Contains(out, tasks.APIKeyID(auth.Hash(alice2))) {
		t.Errorf("after rotate, keys list -user alice =\n%s\nwant the old key with an expiry and the new one", out)
	}
	keyCLI(t, 1, "rotate", "-user", "carol", "-db", db) // no key to rotate

	out, _ = keyCLI(t, 0, "revoke", "-id", bobID, "-db", db)
	if strings.TrimSpace(out) != "revoked "+bobID+" of bob" {
		t.Errorf("keys revoke -id printed %q", out)
	}
	keyCLI(t, 1, "revoke", "-id", bobID, "-db", db) // gone already
	out, _ = keyCLI(t, 0, "revoke", "-user", "alice", "-db", db)
	if strings.Count(out, "revoked ") != 2 {
		t.Errorf("keys revoke -user alice printed %q; want both keys", out)
	}
	if out, _ := keyCLI(t, 0, "list", "-db", db); strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("keys list after revoking all =\n%s", out)
	}

	for _, args := range [][]string{
		{},
		{"frob"},
		{"revoke", "-db", db},
		{"revoke", "-id", "k_1", "-db", db},
		{"revoke", "-id", aliceID, "-user", "alice", "-db", db},
		{"rotate", "-db", db},
		{"rotate", "-user", "alice", "-grace", "-1h", "-db", db},
		{"list", "-user", "a b", "-db", db},
	} {
		keyCLI(t, 2, args...)
	}
}

// replica is one taskd process's API over a shared task database, with its
// own key cache on clock.
func replica(t *testing.T, store tasks.Store, clock *storetest.Clock) http.Handler {
	t.Helper()
	cfg := config.Default()
	srv, err := api.New(api.Options{
		Store:    store,
		Limiter:  middleware(t, memstore.New(), cfg.Rules),
		Registry: prometheus.NewRegistry(),
		KeyCache: auth.CacheConfig{Now: clock.Now},
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv.Handler()
}

// status returns the status of GET /v1/tasks with key on h.
func status(t *testing.T, h http.Handler, key string) int {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/v1/tasks", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code
}

// TestRevokeWithinValidTTL checks the bound docs/taskd.md states: a key
// revoked with taskd keys revoke stops working on every replica within 1
// minute, the time a replica trusts a key it looked up; and a rotated key
// stops within 1 minute of the end of its grace period.
func TestRevokeWithinValidTTL(t *testing.T) {
	if auth.DefaultValidTTL != time.Minute {
		t.Fatalf("auth.DefaultValidTTL is %v; docs/taskd.md and taskd keys revoke say 1 minute", auth.DefaultValidTTL)
	}
	path := filepath.Join(t.TempDir(), "tasks.db")
	db := "sqlite:" + path
	key := newKey(t, "create", "-user", "alice", "-db", db)
	other := newKey(t, "create", "-user", "alice", "-db", db)

	clock := storetest.NewClock(time.Now())
	store, err := sqlitestore.Open(t.Context(), path, sqlitestore.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	replicas := []http.Handler{replica(t, store, clock), replica(t, store, clock)}
	for i, h := range replicas {
		if got := status(t, h, key); got != http.StatusOK {
			t.Fatalf("replica %d: %d before the revocation, want 200", i, got)
		}
	}
	keyCLI(t, 0, "revoke", "-id", tasks.APIKeyID(auth.Hash(key)), "-db", db)
	clock.Advance(auth.DefaultValidTTL - time.Second)
	for i, h := range replicas {
		// Within the bound a replica may still trust its cached lookup.
		if got := status(t, h, key); got != http.StatusOK {
			t.Logf("replica %d: %d before the minute was up", i, got)
		}
	}
	clock.Advance(time.Second)
	for i, h := range replicas {
		if got := status(t, h, key); got != http.StatusUnauthorized {
			t.Errorf("replica %d: %d a minute after the revocation, want 401", i, got)
		}
		if got := status(t, h, other); got != http.StatusOK {
			t.Errorf("replica %d: the user's other key got %d, want 200", i, got)
		}
	}

	// Rotation: the old key works through its grace period and stops
	// within a minute of its end; the new one works.
	newer := newKey(t, "rotate", "-user", "alice", "-grace", "10m", "-db", db)
	clock.Advance(9 * time.Minute)
	for i, h := range replicas {
		if got := status(t, h, other); got != http.StatusOK {
			t.Errorf("replica %d: the old key got %d within its grace period, want 200", i, got)
		}
	}
	clock.Advance(time.Minute + auth.DefaultValidTTL)
	for i, h := range replicas {
		if got := status(t, h, other); got != http.StatusUnauthorized {
			t.Errorf("replica %d: the old key got %d a minute after its grace period, want 401", i, got)
		}
		if got := status(t, h, newer); got != http.StatusOK {
			t.Errorf("replica %d: the new key got %d, want 200", i, got)
		}
	}
}

// TestKeyLastUse checks that lookups through a KeyUseRecorder's store show
// up as the last use in taskd keys list once written.
func TestKeyLastUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	db := "sqlite:" + path
	key := newKey(t, "create", "-user", "alice", "-db", db)
	store, err := sqlitestore.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec := tasks.NewKeyUseRecorder(store, nil)
	clock := storetest.NewClock(time.Now())
	h := replica(t, rec.Store(), clock)
	for range 3 {
		if got := status(t, h, key); got != http.StatusOK {
			t.Fatalf("status %d, want 200", got)
		}
	}
	if out, _ := keyCLI(t, 0, "list", "-db", db); !strings.Contains(out, "never") {
		t.Fatalf("keys list before the uses were written =\n%s\nwant never", out)
	}
	if err := rec.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	out, _ := keyCLI(t, 0, "list", "-db", db)
	if !regexp.MustCompile(`alice\s+k_\w+\s+\S+Z\s+\d{4}-\S+Z\s+-`).MatchString(out) {
		t.Errorf("keys list after the uses were written =\n%s\nwant a last-use time", out)
	}
}
