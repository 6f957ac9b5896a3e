package tasks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of a Pool.
const (
	DefaultLease        = 30 * time.Second
	DefaultPollInterval = 200 * time.Millisecond
	DefaultMaxAttempts  = 3
	// writeTimeout bounds the store writes that end a run (Finish,
	// Release), which must happen even while the pool stops.
	writeTimeout = 10 * time.Second
	// maxClaimBackoff bounds the wait after failed claims.
	maxClaimBackoff = 5 * time.Second
)

// Causes of a canceled run context.
var (
	errPoolStopped = errors.New("worker pool stopped")
	errCanceled    = errors.New("task canceled")
)

// Pool runs queued tasks with a fixed number of workers. Each worker claims
// the oldest queued task under a lease, renews the lease by heartbeat, runs
// the task's kind and finishes the task as succeeded or failed. A reaper in
// the pool ends expired leases of any process (Store.Reap). Several pools,
// in one process or many, may share one store: each task runs in one pool
// at a time.
//
// Workers poll the store every poll interval, and wake at once after
// Notify. Create a Pool with NewPool; its zero value is not usable.
type Pool struct {
	store       Store
	kinds       map[string]Runner
	workers     int
	log         *slog.Logger
	owner       string
	lease       time.Duration
	heartbeat   time.Duration
	poll        time.Duration
	reapEvery   time.Duration
	maxAttempts int
	grace       time.Duration
	onFinish    func(ctx context.Context, t Task)

	wake    chan struct{}
	started atomic.Bool
	mu      sync.Mutex
	running map[string]context.CancelCauseFunc // by task id
}

// PoolOption configures a Pool.
type PoolOption func(*Pool)

// WithLease sets how long a claim or heartbeat holds a task (default
// DefaultLease). Heartbeats come every lease/3 unless WithHeartbeat says
// otherwise. Values ≤ 0 are ignored.
func WithLease(d time.Duration) PoolOption {
	return func(p *Pool) {
		if d > 0 {
			p.lease = d
		}
	}
}

// WithHeartbeat sets how often a worker renews its lease (default lease/3).
// Values ≤ 0 are ignored.
func WithHeartbeat(d time.Duration) PoolOption {
	return func(p *Pool) {
		if d > 0 {
			p.heartbeat = d
		}
	}
}

// WithPollInterval sets how long an idle worker waits before it looks for
// a task again (default DefaultPollInterval). Values ≤ 0 are ignored.
func WithPollInterval(d time.Duration) PoolOption {
	return func(p *Pool) {
		if d > 0 {
			p.poll = d
		}
	}
}

// WithReaper sets how often the pool reaps expired leases (default lease/3)
// and after how many claims a task whose lease expired becomes stuck
// instead of being queued again (default DefaultMaxAttempts). every < 0
// turns the reaper off; 0 keeps the default; maxAttempts < 1 keeps the
// default.
func WithReaper(every time.Duration, maxAttempts int) PoolOption {
	return func(p *Pool) {
		if every != 0 {
			p.reapEvery = every
		}
		if maxAttempts >= 1 {
			p.maxAttempts = maxAttempts
		}
	}
}

// WithGracePeriod sets how long Run, once its context is done, lets running
// tasks finish before it cancels them and hands them back to the queue
// (default 0: at once).
func WithGracePeriod(d time.Duration) PoolOption {
	return func(p *Pool) {
		if d > 0 {
			p.grace = d
		}
	}
}

// WithOwner sets the name the pool's leases carry (default host name,
// process id and a random suffix). Names must be unique among the pools
// sharing a store.
func WithOwner(name string) PoolOption {
	return func(p *Pool) {
		if name != "" {
			p.owner = name
		}
	}
}

// WithOnFinish sets a hook called once for each task that this pool ended:
// a task it finished (succeeded or failed) and a task its reaper marked
// stuck, with the task as stored. It is not called for tasks canceled by
// their user or handed back to the queue. taskd uses it to refund the
// task's receipt after a worker failure (the store has also queued a
// durable refund record for it; see Refunder). f runs on a pool goroutine
// (the worker's, or the reaper's for a stuck task) with a context that the
// pool's stop does not cancel; keep it short.
func WithOnFinish(f func(ctx context.Context, t Task)) PoolOption {
	return func(p *Pool) { p.onFinish = f }
}

// NewPool returns a pool of workers (< 1 is taken as 1) that runs the
// tasks of store with kinds (see Kinds); a task whose kind is missing from
// kinds fails. A nil logger discards logs.
func NewPool(store Store, kinds map[string]Runner, workers int, logger *slog.Logger, opts ...PoolOption) *Pool {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		store:       store,
		kinds:       kinds,
		workers:     max(workers, 1),
		log:         logger,
		owner:       defaultOwner(),
		lease:       DefaultLease,
		poll:        DefaultPollInterval,
		maxAttempts: DefaultMaxAttempts,
		wake:        make(chan struct{}, 1),
		running:     make(map[string]context.CancelCauseFunc),
	}
	for _, o := range opts {
		o(p)
	}
	if p.heartbeat == 0 {
		p.heartbeat = p.lease / 3
	}
	if p.reapEvery == 0 {
		p.reapEvery = p.lease / 3
	}
	return p
}

func defaultOwner() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Owner returns the name on the pool's leases.
func (p *Pool) Owner() string { return p.owner }

// Notify wakes an idle worker to look for a task now; call it after
// creating a task. It never blocks.
func (p *Pool) Notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Cancel stops the task id if it runs in this pool, and reports whether it
// did. Call it after Store.Cancel succeeded: the worker then writes nothing
// more for the task. Without it, a worker learns of a cancel from its next
// heartbeat.
func (p *Pool) Cancel(id string) bool {
	p.mu.Lock()
	cancel, ok := p.running[id]
	p.mu.Unlock()
	if ok {
		cancel(errCanceled)
	}
	return ok
}

// Run runs the workers and the reaper until ctx is done, then stops: no new
// claims, running tasks get the grace period (WithGracePeriod) to finish,
// and the ones still running after it are canceled and handed back to the
// queue (Store.Release), for this or another process to run again. So a
// stop loses no task and leaves no user's slot locked; a process that dies
// instead leaves leases that the reaper of any pool ends. Run returns nil
// after a stop, and an error only when the pool is already running.
func (p *Pool) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("tasks: pool is already running")
	}
	defer p.started.Store(false)
	hard, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stop(errPoolStopped)

	p.log.Info("task workers started", "workers", p.workers, "owner", p.owner, "lease", p.lease)
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() { p.work(ctx, hard) })
	}
	if p.reapEvery > 0 {
		wg.Go(func() { p.reap(ctx, hard) })
	}
	<-ctx.Done()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	grace := time.NewTimer(p.grace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		stop(errPoolStopped)
		<-done
	}
	p.log.Info("task workers stopped", "owner", p.owner)
	return nil
}

// work claims and runs tasks until ctx is done.
// After a failed claim it waits twice as long as after the last one, up
// to maxClaimBackoff, so a store that is down is not hammered nor the log
// flooded.
func (p *Pool) work(ctx, hard context.Context) {
	backoff := p.poll
	for ctx.Err() == nil {
		t, ok, err := p.store.Claim(ctx, p.owner, p.lease)
		pause := p.poll
		switch {
		case err != nil && ctx.Err() == nil:
			p.log.Error("claim task", "err", err, "retry_in", backoff)
			pause, backoff = backoff, min(2*backoff, max(maxClaimBackoff, p.poll))
		case ok:
			backoff = p.poll
			p.run(hard, t)
			continue
		default:
			backoff = p.poll
		}
		select {
		case <-ctx.Done():
		case <-p.wake:
		case <-time.After(pause):
		}
	}
}

// run runs the claimed task t and records how it ended.
func (p *Pool) run(hard context.Context, t Task) {
	log := p.log.With("task_id", t.ID, "kind", t.Kind, "attempt", t.Attempts)
	runCtx, cancel := context.WithCancelCause(hard)
	defer cancel(nil)
	p.mu.Lock()
	p.running[t.ID] = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.running, t.ID)
		p.mu.Unlock()
	}()

	stopBeat := make(chan struct{})
	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		p.beat(runCtx, cancel, t.ID, stopBeat, log)
	}()
	log.Debug("task started")
	out, runErr := p.call(runCtx, t)
	close(stopBeat)
	<-beatDone

	wctx, wcancel := context.WithTimeout(context.WithoutCancel(hard), writeTimeout)
	defer wcancel()
	if runErr != nil && runCtx.Err() != nil {
		switch cause := context.Cause(runCtx); {
		case errors.Is(cause, errPoolStopped):
			if err := p.store.Release(wctx, t.ID, p.owner); err != nil {
				log.Error("hand task back to the queue", "err", err)
				return
			}
			log.Info("task handed back to the queue: pool stopping")
			return
		case errors.Is(cause, errCanceled), errors.Is(cause, ErrLeaseLost):
			log.Info("task stopped", "reason", cause.Error())
			return
		}
	}
	st, errMsg := StatusSucceeded, ""
	if runErr != nil {
		st, out, errMsg = StatusFailed, nil, runErr.Error()
	} else if len(out) == 0 || !json.Valid(out) {
		st, out, errMsg = StatusFailed, nil, fmt.Sprintf("kind %q returned output that is not valid JSON", t.Kind)
	}
	done, err := p.store.Finish(wctx, t.ID, p.owner, st, out, errMsg)
	switch {
	case errors.Is(err, ErrLeaseLost):
		log.Info("task ended elsewhere (canceled or reaped) before it finished here", "status", st)
		return
	case err != nil:
		log.Error("finish task; its lease will expire and the reaper will end it", "status", st, "err", err)
		return
	}
	log.Info("task finished", "status", st, "error", errMsg)
	if p.onFinish != nil {
		p.onFinish(wctx, done)
	}
}

// call runs t's kind, turning a panic into an error.
func (p *Pool) call(ctx context.Context, t Task) (out json.RawMessage, err error) {
	run, ok := p.kinds[t.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %q: %w", t.Kind, ErrUnknownKind)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kind %q panicked: %v", t.Kind, r)
		}
	}()
	return run(ctx, t.Input)
}

// beat renews the lease of task id until stop closes, and cancels the run
// with ErrLeaseLost when the lease is gone.
func (p *Pool) beat(ctx context.Context, cancel context.CancelCauseFunc, id string, stop <-chan struct{}, log *slog.Logger) {
	tick := time.NewTicker(p.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := p.store.Heartbeat(ctx, id, p.owner, p.lease)
		switch {
		case errors.Is(err, ErrLeaseLost):
			cancel(ErrLeaseLost)
			return
		case err != nil && ctx.Err() == nil:
			log.Warn("renew task lease", "err", err)
		}
	}
}

// reap ends expired leases every reapEvery until ctx is done.
func (p *Pool) reap(ctx, hard context.Context) {
	tick := time.NewTicker(p.reapEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		reaped, err := p.store.Reap(ctx, p.maxAttempts)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Error("reap expired task leases", "err", err)
			}
			continue
		}
		for _, t := range reaped {
			p.log.Warn("task lease expired", "task_id", t.ID, "kind", t.Kind, "attempts", t.Attempts, "status", t.Status)
			if t.Status == StatusStuck && p.onFinish != nil {
				wctx, cancel := context.WithTimeout(context.WithoutCancel(hard), writeTimeout)
				p.onFinish(wctx, t)
				cancel()
			}
		}
		if len(reaped) > 0 {
			p.Notify()
		}
	}
}
