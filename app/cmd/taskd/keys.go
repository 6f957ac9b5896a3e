package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
	c := newDBCommand("keys create")
	user := c.fs.String("user", "", "the user the key authenticates (required): 1 to 64 letters, digits, '.', '_', '-' or '@'")
	if err := c.parse(args, stderr); err != nil {
		return err
	}
	if err := c.requireUser(*user, "taskd keys create -user NAME"); err != nil {
		return err
	}
	log, store, err := c.open(ctx, stderr)
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
	c := newDBCommand("keys list")
	user := c.fs.String("user", "", "list only this user's keys; empty: every user's")
	if err := c.parse(args, stderr); err != nil {
		return err
	}
	if *user != "" {
		if err := auth.ValidUser(*user); err != nil {
			return usagef("taskd keys list: -user: %v", err)
		}
	}
	_, store, err := c.open(ctx, stderr)
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
	c := newDBCommand("keys revoke")
	ids := c.fs.String("id", "", "the key ids to revoke, as taskd keys list shows them (k_ and 12 hex digits), separated by commas")
	user := c.fs.String("user", "", "revoke every key of this user instead")
	if err := c.parse(args, stderr); err != nil {
		return err
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
	log, store, err := c.open(ctx, stderr)
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
	c := newDBCommand("keys rotate")
	user := c.fs.String("user", "", "the user whose keys to rotate (required)")
	grace := c.fs.Duration("grace", DefaultRotateGrace, "how long the user's old keys keep working, such as 24h or 30m; 0 ends them at once")
	if err := c.parse(args, stderr); err != nil {
		return err
	}
	if err := c.requireUser(*user, "taskd keys rotate -user NAME [-grace 24h]"); err != nil {
		return err
	}
	if *grace < 0 {
		return usagef("taskd keys rotate: -grace %v: expected 0 or more, such as 24h", *grace)
	}
	log, store, err := c.open(ctx, stderr)
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
	c := newDBCommand("migrate")
	if err := c.parse(args, stderr); err != nil {
		return err
	}
	log, store, err := c.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	log.Info("task database is up to date", "db", dbKind(c.db))
	return nil
}

// dbCommand is what every command on the task database shares: its flag
// set with -db and the log flags, their checks, the logger and the store.
type dbCommand struct {
	name string // such as "keys create"
	fs   *flag.FlagSet
	db   string
	log  logFlags
}

func newDBCommand(name string) *dbCommand {
	c := &dbCommand{name: name, fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.StringVar(&c.db, "db", DefaultDB, `task database: "sqlite:PATH" or "postgres://…"`)
	c.log.register(c.fs)
	return c
}

// parse parses args into the command's flags and checks -db; the command
// checks its own flags after.
func (c *dbCommand) parse(args []string, stderr io.Writer) error {
	if err := parseFlags(c.fs, args, stderr); err != nil {
		return err
	}
	if err := checkDB(c.db); err != nil {
		return usagef("taskd %s: %v", c.name, err)
	}
	return nil
}

// requireUser checks the value of a required -user flag; example shows the
// command with it.
func (c *dbCommand) requireUser(user, example string) error {
	if user == "" {
		return usagef("taskd %s: -user is required: %s", c.name, example)
	}
	if err := auth.ValidUser(user); err != nil {
		return usagef("taskd %s: -user: %v", c.name, err)
	}
	return nil
}

// open returns the logger of the log flags and the task database, migrated;
// the caller closes the store.
func (c *dbCommand) open(ctx context.Context, stderr io.Writer) (*slog.Logger, tasks.Store, error) {
	log, err := c.log.logger(stderr)
	if err != nil {
		return nil, nil, err
	}
	store, err := openTasks(ctx, c.db)
	if err != nil {
		return nil, nil, err
	}
	return log, store, nil
}
