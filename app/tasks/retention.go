package tasks

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"
)

// Defaults of a Purger.
const (
	// DefaultRetention is how long finished tasks are kept when taskd's
	// configuration does not say.
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultPurgeBatch is the most tasks one statement deletes.
	DefaultPurgeBatch = 500
	// DefaultPurgePause is the pause between two batches of one pass, in
	// which the API's writes get the database.
	DefaultPurgePause = 100 * time.Millisecond
	// DefaultPurgeInterval is the time from the end of one pass to the
	// start of the next.
	DefaultPurgeInterval = 10 * time.Minute
)

// Purger deletes finished tasks (succeeded, failed, canceled, stuck) once
// they are older than a retention age, counted from when they finished. It
// deletes in small batches (Store.DeleteFinished), each its own short
// statement with a pause after it, so that it never holds the database for
// long; a pass ends with a batch that is not full, and the next pass starts
// an interval later. Tasks whose durable refund is pending are kept until
// it is done or abandoned (the store skips them), and active tasks are
// never deleted. Several processes may purge one database at once. Create
// one with NewPurger; the zero value is not usable.
type Purger struct {
	store    Store
	age      time.Duration
	batch    int
	pause    time.Duration
	interval time.Duration
	clock    Clock
	log      *slog.Logger
	hook     func(deleted map[Status]int)
	started  atomic.Bool
}

// PurgerOption configures a Purger.
type PurgerOption func(*Purger)

// WithPurgeBatch sets the most tasks one statement deletes (default
// DefaultPurgeBatch) and the pause after each full batch (default
// DefaultPurgePause). Values ≤ 0 keep the defaults.
func WithPurgeBatch(size int, pause time.Duration) PurgerOption {
	return func(p *Purger) {
		if size > 0 {
			p.batch = size
		}
		if pause > 0 {
			p.pause = pause
		}
	}
}

// WithPurgeInterval sets the time between passes (default
// DefaultPurgeInterval). Values ≤ 0 are ignored.
func WithPurgeInterval(d time.Duration) PurgerOption {
	return func(p *Purger) {
		if d > 0 {
			p.interval = d
		}
	}
}

// WithPurgeClock makes the Purger read the time and wait with c instead
// of the system clock (for tests). Nil is ignored.
func WithPurgeClock(c Clock) PurgerOption {
	return func(p *Purger) {
		if c != nil {
			p.clock = c
		}
	}
}

// WithPurgeHook sets a function called after each batch that deleted
// tasks, with how many of each state it deleted. For metrics; keep it
// short.
func WithPurgeHook(f func(deleted map[Status]int)) PurgerOption {
	return func(p *Purger) { p.hook = f }
}

// NewPurger returns a Purger that deletes store's tasks that finished
// more than age ago. age must be positive: to keep tasks forever, run no
// Purger. A nil logger discards logs.
func NewPurger(store Store, age time.Duration, logger *slog.Logger, opts ...PurgerOption) (*Purger, error) {
	if age <= 0 {
		return nil, errors.New("tasks: purger: the retention age must be positive")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Purger{
		store:    store,
		age:      age,
		batch:    DefaultPurgeBatch,
		pause:    DefaultPurgePause,
		interval: DefaultPurgeInterval,
		clock:    systemClock{},
		log:      logger,
	}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Purge makes one pass: it deletes, batch after batch with a pause between
// them, the tasks that finished more than the retention age before now,
// until a batch is not full. It returns how many it deleted; on an error or
// when ctx is done it returns those deleted so far with the error.
func (p *Purger) Purge(ctx context.Context) (int, error) {
	// The cutoff is fixed for the pass, so that it ends even when tasks
	// keep finishing.
	before := p.clock.Now().Add(-p.age)
	total := 0
	for {
		deleted, err := p.store.DeleteFinished(ctx, before, p.batch)
		if err != nil {
			return total, err
		}
		n := 0
		for _, c := range deleted {
			n += c
		}
		total += n
		if n > 0 && p.hook != nil {
			p.hook(maps.Clone(deleted))
		}
		if n < p.batch {
			return total, nil
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-p.clock.After(p.pause):
		}
	}
}

// Run purges at once and then an interval after each pass ends, until ctx
// is done; then it returns nil. A failed pass is logged and the next one
// tries again. It returns an error only when the Purger is already
// running.
func (p *Purger) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("tasks: purger is already running")
	}
	defer p.started.Store(false)
	for ctx.Err() == nil {
		n, err := p.Purge(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			p.log.Error("delete old finished tasks; trying again later", "err", err, "deleted", n, "retry_in", p.interval)
		case n > 0:
			p.log.Info("deleted old finished tasks", "deleted", n, "retention", p.age)
		}
		select {
		case <-ctx.Done():
		case <-p.clock.After(p.interval):
		}
	}
	return nil
}
