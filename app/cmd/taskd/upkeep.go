package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance/app/tasks"
)

// upkeep is serve's background care of the task database: the retention
// loop (tasks.Purger), when server.retention is not off, and the batched
// writes of API keys' last use (tasks.KeyUseRecorder).
type upkeep struct {
	keyUse *tasks.KeyUseRecorder
	purger *tasks.Purger // nil: retention off
	wg     sync.WaitGroup
}

// newUpkeep prepares the upkeep of store, with the counter
// taskd_tasks_deleted_total registered in registry. retention 0 keeps
// finished tasks forever.
func newUpkeep(store tasks.Store, retention time.Duration, registry prometheus.Registerer, log *slog.Logger) (*upkeep, error) {
	deleted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "taskd_tasks_deleted_total",
		Help: "Finished tasks deleted by this process because they were older than server.retention, by status.",
	}, []string{"status"})
	for _, st := range []tasks.Status{tasks.StatusSucceeded, tasks.StatusFailed, tasks.StatusCanceled, tasks.StatusStuck} {
		deleted.WithLabelValues(string(st))
	}
	if err := registry.Register(deleted); err != nil {
		return nil, err
	}
	u := &upkeep{keyUse: tasks.NewKeyUseRecorder(store, log)}
	if retention == 0 {
		log.Warn("server.retention is off: finished tasks are kept forever")
	}
	if retention > 0 {
		log.Info("finished tasks are deleted once older than server.retention", "retention", retention)
		var err error
		u.purger, err = tasks.NewPurger(store, retention, log, tasks.WithPurgeHook(func(d map[tasks.Status]int) {
			for st, n := range d {
				deleted.WithLabelValues(string(st)).Add(float64(n))
			}
		}))
		if err != nil {
			return nil, err
		}
	}
	return u, nil
}

// apiStore is the store for the API: its key lookups note the keys' use.
func (u *upkeep) apiStore() tasks.Store { return u.keyUse.Store() }

// start runs the loops until ctx is done.
func (u *upkeep) start(ctx context.Context) {
	u.wg.Go(func() { _ = u.keyUse.Run(ctx) }) // errors only when already running
	if u.purger != nil {
		u.wg.Go(func() { _ = u.purger.Run(ctx) })
	}
}

// wait waits for the loops to end after their context is done.
func (u *upkeep) wait() { u.wg.Wait() }
