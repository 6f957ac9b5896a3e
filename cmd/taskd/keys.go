package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/allowancehq/allowance/internal/auth"
)

// keysCreate is "taskd keys create -user NAME [-db DSN]": it stores the
// hash of a new API key for the user and prints the key as the only line on
// stdout (logs go to stderr).
func keysCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys create", flag.ContinueOnError)
	user := fs.String("user", "", "the user the key authenticates (required): 1 to 64 letters, digits, '.', '_', '-' or '@'")
	db := fs.String("db", DefaultDB, `task database: "sqlite:PATH" or "postgres://…"`)
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := checkDB(*db); err != nil {
		return usagef("taskd keys create: %v", err)
	}
	if *user == "" {
		return usagef("taskd keys create: -user is required: taskd keys create -user NAME")
	}
	if err := auth.ValidUser(*user); err != nil {
		return usagef("taskd keys create: -user: %v", err)
	}
	if _, err := lf.logger(stderr); err != nil {
		return err
	}
	store, err := openTasks(ctx, *db)
	if err != nil {
		return err
	}
	defer store.Close()
	key, hash := auth.NewKey()
	if err := store.CreateAPIKey(ctx, *user, hash); err != nil {
		return fmt.Errorf("store API key: %w", err)
	}
	_, err = fmt.Fprintln(stdout, key)
	return err
}

// migrate is "taskd migrate [-db DSN]": it brings the task database's schema
// up to date (serve does it too on start).
func migrate(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	db := fs.String("db", DefaultDB, `task database: "sqlite:PATH" or "postgres://…"`)
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := checkDB(*db); err != nil {
		return usagef("taskd migrate: %v", err)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	store, err := openTasks(ctx, *db)
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("task database is up to date", "db", dbKind(*db))
	return nil
}
