// Package taskdb opens the task store a DSN names, SQLite or PostgreSQL. It
// lives apart from package tasks so that tasks imports no backend.
package taskdb

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/pgstore"
	"github.com/allowancehq/allowance/app/tasks/sqlitestore"
)

// Open opens the task store dsn names and checks that it answers; it does
// not migrate (call Store.Migrate):
//
//   - "postgres://…" or "postgresql://…": PostgreSQL (tasks/pgstore), the
//     URL as pgx takes it, e.g. "postgres://taskd@db:5432/taskd?sslmode=disable".
//   - "sqlite:PATH": the SQLite file PATH (tasks/sqlitestore), created when
//     missing, e.g. "sqlite:taskd.db" or "sqlite:/var/lib/taskd/tasks.db".
//   - "sqlite::memory:": a private in-memory SQLite database (tests, trials).
//   - anything else without a scheme ("taskd.db"): a SQLite file path.
//
// Any other scheme ("mysql://…") is an error naming the accepted forms.
func Open(ctx context.Context, dsn string) (tasks.Store, error) {
	switch {
	case dsn == "":
		return nil, errors.New(`task database: empty DSN; expected "sqlite:PATH" or "postgres://…"`)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s, err := pgstore.Open(ctx, dsn)
		if err != nil {
			return nil, err
		}
		return s, nil
	case strings.HasPrefix(dsn, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	case strings.Contains(dsn, "://"):
		scheme, _, _ := strings.Cut(dsn, "://")
		return nil, fmt.Errorf(`task database %q: unknown scheme %q; expected "sqlite:PATH" or "postgres://…"`, redact(dsn), scheme)
	}
	return openSQLite(ctx, dsn)
}

func openSQLite(ctx context.Context, path string) (tasks.Store, error) {
	if path == "" {
		return nil, errors.New(`task database "sqlite:": empty path; expected "sqlite:PATH"`)
	}
	s, err := sqlitestore.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// redact hides a password in a URL-like DSN for error messages.
func redact(dsn string) string {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return dsn
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok {
		return dsn
	}
	if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
		return scheme + "://" + user + ":xxxxx@" + host
	}
	return dsn
}
