package tasks

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of a KeyUseRecorder.
const (
	// DefaultKeyUseInterval is how often noted key uses are written.
	DefaultKeyUseInterval = time.Minute
	// maxNotedKeys bounds the uses a KeyUseRecorder holds between writes;
	// further keys are noted at a later lookup.
	maxNotedKeys = 10_000
	// keyUseFlushTimeout bounds the last write, when Run stops.
	keyUseFlushTimeout = 5 * time.Second
)

// KeyUseRecorder records when API keys were last used (APIKey.LastUsedAt)
// without a write on the path of a request: the store it wraps (Store)
// notes in memory each key that UserByAPIKey finds, and Run writes the
// noted uses in one batch (Store.TouchAPIKeys) every interval. So a key
// costs at most one write per interval per process; behind a cache of
// lookups (taskd's trusts a key for a minute) the time recorded is that
// of the lookup, which is within about a minute of the key's last use.
// Create one with NewKeyUseRecorder; the zero value is not usable.
type KeyUseRecorder struct {
	store    Store
	interval time.Duration
	clock    Clock
	log      *slog.Logger
	started  atomic.Bool

	mu    sync.Mutex
	noted map[string]time.Time // key hash → latest use
}

// KeyUseOption configures a KeyUseRecorder.
type KeyUseOption func(*KeyUseRecorder)

// WithKeyUseInterval sets how often noted uses are written (default
// DefaultKeyUseInterval). Values ≤ 0 are ignored.
func WithKeyUseInterval(d time.Duration) KeyUseOption {
	return func(r *KeyUseRecorder) {
		if d > 0 {
			r.interval = d
		}
	}
}

// WithKeyUseClock makes the recorder read the time and wait with c (for
// tests). Nil is ignored.
func WithKeyUseClock(c Clock) KeyUseOption {
	return func(r *KeyUseRecorder) {
		if c != nil {
			r.clock = c
		}
	}
}

// NewKeyUseRecorder returns a recorder of the key uses of store. A nil
// logger discards logs.
func NewKeyUseRecorder(store Store, logger *slog.Logger, opts ...KeyUseOption) *KeyUseRecorder {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &KeyUseRecorder{
		store:    store,
		interval: DefaultKeyUseInterval,
		clock:    systemClock{},
		log:      logger,
		noted:    make(map[string]time.Time),
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Store returns the recorder's store, whose UserByAPIKey notes every key
// it finds; the other methods are the store's own.
func (r *KeyUseRecorder) Store() Store { return keyUseStore{r.store, r} }

type keyUseStore struct {
	Store
	r *KeyUseRecorder
}

func (s keyUseStore) UserByAPIKey(ctx context.Context, keyHash []byte) (string, error) {
	user, err := s.Store.UserByAPIKey(ctx, keyHash)
	if err == nil {
		s.r.Note(keyHash)
	}
	return user, err
}

// Note records that the key of keyHash was used now; the use is written at
// the next Flush. It never blocks on the database.
func (r *KeyUseRecorder) Note(keyHash []byte) {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.noted[string(keyHash)]; ok || len(r.noted) < maxNotedKeys {
		r.noted[string(keyHash)] = now
	}
}

// Flush writes the uses noted since the last Flush. When the write fails
// they are dropped (a key's next lookup notes it again) and the error
// returned.
func (r *KeyUseRecorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	noted := r.noted
	r.noted = make(map[string]time.Time, len(noted))
	r.mu.Unlock()
	if len(noted) == 0 {
		return nil
	}
	uses := make([]APIKeyUse, 0, len(noted))
	for h, at := range noted {
		uses = append(uses, APIKeyUse{KeyHash: []byte(h), At: at})
	}
	return r.store.TouchAPIKeys(ctx, uses)
}

// Run writes the noted uses every interval until ctx is done, then writes
// the last ones and returns nil. A failed write is logged. It returns an
// error only when the recorder is already running.
func (r *KeyUseRecorder) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("tasks: key use recorder is already running")
	}
	defer r.started.Store(false)
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyUseFlushTimeout)
			defer cancel()
			if err := r.Flush(fctx); err != nil {
				r.log.Warn("record the last uses of API keys", "err", err)
			}
			return nil
		case <-r.clock.After(r.interval):
			if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("record the last uses of API keys; they are noted again at their next lookup", "err", err)
			}
		}
	}
}
