// Package pgtest gives tests a fresh PostgreSQL database.
//
// The server is the one $ALLOWANCE_TEST_POSTGRES names (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable); the user
// must be allowed to create databases. When no server answers, a test
// skips with a message saying how to get one, except when CI=true, where
// it fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is the server used when $ALLOWANCE_TEST_POSTGRES is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// EnvVar names the variable holding the server's URL.
const EnvVar = "ALLOWANCE_TEST_POSTGRES"

// DB creates a new, empty database named allowance_test_<random> on the
// server and returns its URL; t.Cleanup drops it (with FORCE, so open
// connections do not keep it alive).
func DB(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(EnvVar)
	if admin == "" {
		admin = DefaultURL
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("pgtest: $%s %q: expected a postgres:// URL: %v", EnvVar, admin, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		msg := fmt.Sprintf("pgtest: no PostgreSQL server at %s (%v); start one (Debian: apt-get install postgresql, "+
			"then pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) or set $%s to the URL of a server whose user may create databases",
			u.Redacted(), err, EnvVar)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	defer conn.Close(context.Background())

	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "allowance_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database %s on %s: %v", name, u.Redacted(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	db := *u
	db.Path = "/" + name
	return db.String()
}
