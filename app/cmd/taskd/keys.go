package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/tasks"
)

// keysUsage lists the keys subcommands.
const keysUsage = `expected a subcommand: taskd keys create -user NAME, taskd keys list [-user NAME], ` +
	`taskd keys revoke -id KEY_ID | -user NAME, taskd keys rotate -user NAME [-grace 24h]`

// DefaultRotateGrace is how long "taskd keys rotate" keeps the old keys
// working when -grace is not given.
const DefaultRotateGrace = 24 * time.Hour

// keys runs "taskd keys SUBCOMMAND ...".
func keys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("taskd keys: %s", keysUsage)
	}
	switch args[0] {
	case "create":
		return keysCreate(ctx, args[1:], stdout, stderr)
	case "list":
		return keysList(ctx, args[1:], stdout, stderr)
	case "revoke":
		return keysRevoke(ctx, args[1:], stdout, stderr)
	case "rotate":
		return keysRotate(ctx, args[1:], stdout, stderr)
	}
	return usagef("taskd keys: unknown subcommand %q; %s", args[0], keysUsage)
}

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
	log, err := lf.logger(stderr)
	if err != nil {
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
	log.Info("API key created", "user", *user, "key_id", tasks.APIKeyID(hash))
	_, err = fmt.Fprintln(stdout, key)
	return err
}

// keysList is "taskd keys list [-user NAME] [-db DSN]": a table of the
// keys (of one user, or all) with their ids, creation, last use and
// expiry. Keys themselves are never stored, so never shown.
func keysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys list", flag.ContinueOnError)
	user := fs.String("user", "", "list only this user's keys; empty: every user's")
	db := fs.String("db", DefaultDB, `task database: "sqlite:PATH" or "postgres://…"`)
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := checkDB(*db); err != nil {
		return usagef("taskd keys list: %v", err)
	}
	if *user != "" {
		if err := auth.ValidUser(*user); err != nil {
			return usagef("taskd keys list: -user: %v", err)
		}
	}
	if _, err := lf.logger(stderr); err != nil {
		return err
	}
	store, err := openTasks(ctx, *db)
	if err != nil {
		return err
	}
	defer store.Close()
	ks, err := store.ListAPIKeys(ctx, *user)
	if err != nil {
		return err
	}
	return writeKeys(stdout, ks, time.Now())
}

// writeKeys writes keys as a table: USER, KEY_ID, CREATED, LAST_USED,
// EXPIRES (times in UTC, RFC 3339).
func writeKeys(w io.Writer, ks []tasks.APIKey, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tKEY_ID\tCREATED\tLAST_USED\tEXPIRES")
	for _, k := range ks {
		used, expires := "never", "-"
		if k.LastUsedAt != nil {
			used = stamp(*k.LastUsedAt)
		}
		if k.ExpiresAt != nil {
			expires = stamp(*k.ExpiresAt)
			if k.Expired(now) {
				expires += " (expired)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.UserID, k.ID, stamp(k.CreatedAt), used, expires)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write the key list: %w", err)
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// revokeDelay is what "taskd keys revoke" says about when a revocation
// takes effect: a running taskd trusts a key it has looked up for
// auth.DefaultValidTTL, 1 minute (TestRevokeWithinValidTTL checks it).
const revokeDelay = "running servers stop accepting them within 1 minute (they trust a key they looked up for that long)"

// keysRevoke is "taskd keys revoke -id KEY_ID[,KEY_ID...] | -user NAME
// [-db DSN]": it deletes the keys and prints a line for each on stdout.
func keysRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys revoke", flag.ContinueOnError)
	ids := fs.String("id", "", "the key ids to revoke, as taskd keys list shows them (k_ and 12 hex digits), separated by commas")
	user := fs.String("user", "", "revoke every key of this user instead")
	db := fs.String("db", DefaultDB, `task database: "sqlite:PATH" or "postgres://…"`)
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := checkDB(*db); err != nil {
		return usagef("taskd keys revoke: %v", err)
	}
	if (*ids == "") == (*user == "") {
		return usagef("taskd keys revoke: expected -id KEY_ID or -user NAME, one of them")
	}
	var idList []string
	if *ids != "" {
		for id := range strings.SplitSeq(*ids, ",") {
			id = strings.TrimSpace(id)
			if !tasks.ValidAPIKeyID(id) {
				return usagef("taskd keys revoke: -id %q: expected a key id like k_0123456789ab, as taskd keys list shows", id)
			}
			idList = append(idList, id)
		}
	} else if err := auth.ValidUser(*user); err != nil {
		return usagef("taskd keys revoke: -user: %v", err)
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
	var revoked []tasks.APIKey
	var missing []string
	if *user != "" {
		if revoked, err = store.RevokeUserAPIKeys(ctx, *user); err != nil {
			return err
		}
		if len(revoked) == 0 {
			return fmt.Errorf("taskd keys revoke: user %s has no keys", *user)
		}
	}
	for _, id := range idList {
		k, err := store.RevokeAPIKey(ctx, id)
		switch {
		case errors.Is(err, tasks.ErrNotFound):
			missing = append(missing, id)
			continue
		case err != nil:
			return err
		}
		revoked = append(revoked, k)
	}
	for _, k := range revoked {
		log.Info("API key revoked", "user", k.UserID, "key_id", k.ID)
		if _, err := fmt.Fprintf(stdout, "revoked %s of %s\n", k.ID, k.UserID); err != nil {
			return err
		}
	}
	if len(revoked) > 0 {
		log.Info("revoked keys are gone from the database; " + revokeDelay)
	}
	if len(missing) > 0 {
		return fmt.Errorf("taskd keys revoke: no key %s (see taskd keys list)", strings.Join(missing, ", "))
	}
	return nil
}

// keysRotate is "taskd keys rotate -user NAME [-grace D] [-db DSN]": it
// creates a new key for the user, prints it as the only line on stdout,
// and makes the user's other keys stop working after the grace period.
func keysRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys rotate", flag.ContinueOnError)
	user := fs.String("user", "", "the user whose keys to rotate (required)")
	grace := fs.Duration("grace", DefaultRotateGrace, "how long the user's old keys keep working, such as 24h or 30m; 0 ends them at once")
	db := fs.String("db", DefaultDB, `task database: "sqlite:PATH" or "postgres://…"`)
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := checkDB(*db); err != nil {
		return usagef("taskd keys rotate: %v", err)
	}
	if *user == "" {
		return usagef("taskd keys rotate: -user is required: taskd keys rotate -user NAME [-grace 24h]")
	}
	if err := auth.ValidUser(*user); err != nil {
		return usagef("taskd keys rotate: -user: %v", err)
	}
	if *grace < 0 {
		return usagef("taskd keys rotate: -grace %v: expected 0 or more, such as 24h", *grace)
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
	key, hash := auth.NewKey()
	nk, old, err := store.RotateAPIKeys(ctx, *user, hash, *grace)
	if errors.Is(err, tasks.ErrNotFound) {
		return fmt.Errorf("taskd keys rotate: user %s has no key that works; create one with taskd keys create -user %s", *user, *user)
	}
	if err != nil {
		return err
	}
	log.Info("API key created", "user", *user, "key_id", nk.ID)
	for _, k := range old {
		log.Info("old API key expires", "user", *user, "key_id", k.ID, "expires", stamp(*k.ExpiresAt))
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
