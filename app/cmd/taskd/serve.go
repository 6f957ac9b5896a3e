package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/app/internal/api"
	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/internal/config"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/taskdb"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/httplimit/promlimit"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
)

// DefaultWorkers is the size of the worker pool when -workers is not given.
const DefaultWorkers = 4

type serveFlags struct {
	addr         string
	config       string
	db           string
	redis        string
	redisCluster string
	workers      int
	log          logFlags
	// metricsAddr, when set, serves /metrics there instead of on addr.
	metricsAddr    string
	trustedProxies prefixesFlag
	tls            tlsFlags
	// receiptKeys is the file of -receipt-keys-file; keys, read from it
	// when parsed, sign and verify rate limit receipts.
	receiptKeys string
	keys        *allowance.ReceiptKeys
}

func parseServe(args []string, stderr io.Writer) (serveFlags, error) {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "address to listen on, host:port (port 0 picks a free one)")
	fs.StringVar(&f.config, "config", "", "YAML configuration file (rules and server settings); built-in defaults when empty")
	fs.StringVar(&f.db, "db", DefaultDB, "task database: "+dbForms)
	fs.StringVar(&f.redis, "redis", "", "Redis node for the rate limits, redis://[user:pass@]host:port/db; empty (and no -redis-cluster): in-memory limits")
	fs.StringVar(&f.redisCluster, "redis-cluster", "", "seed nodes of a Redis Cluster for the rate limits, host:port,host:port,...")
	fs.IntVar(&f.workers, "workers", DefaultWorkers, "task workers in this process; 0 runs none (an API-only replica)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve GET /metrics on this host:port only, not on -addr; empty: on -addr")
	fs.StringVar(&f.receiptKeys, "receipt-keys-file", "", "file of the keys that sign rate limit receipts, one hex key a line, the signing key first; empty: a key shared through Redis (-redis, -redis-cluster) or one per process (in-memory limits)")
	fs.Var(&f.trustedProxies, "trusted-proxies", "proxies whose X-Forwarded-For or Forwarded header names the client, for the limit of failed authentications per client IP: addresses or prefixes, 10.0.0.0/8,192.0.2.1")
	f.log.register(fs)
	f.tls.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return f, err
	}
	switch {
	case f.workers < 0:
		return f, usagef("taskd serve: -workers %d: expected 0 or more", f.workers)
	case f.redis != "" && f.redisCluster != "":
		return f, usagef("taskd serve: -redis and -redis-cluster are both set; expected at most one")
	}
	if err := checkDB(f.db); err != nil {
		return f, usagef("taskd serve: %v", err)
	}
	if err := checkAddr("addr", f.addr, "127.0.0.1:8080"); err != nil {
		return f, usagef("taskd serve: %v", err)
	}
	if err := checkAddr("metrics-addr", f.metricsAddr, "127.0.0.1:9090"); f.metricsAddr != "" && err != nil {
		return f, usagef("taskd serve: %v", err)
	}
	if err := f.tls.check(); err != nil {
		return f, usagef("taskd serve: %v", err)
	}
	if f.redisCluster != "" {
		for _, a := range strings.Split(f.redisCluster, ",") {
			if _, _, err := net.SplitHostPort(strings.TrimSpace(a)); err != nil {
				return f, usagef("taskd serve: -redis-cluster %q: node %q: expected host:port", f.redisCluster, a)
			}
		}
	}
	if f.redis != "" && !strings.HasPrefix(f.redis, "redis://") && !strings.HasPrefix(f.redis, "rediss://") {
		return f, usagef("taskd serve: -redis %q: expected a URL redis://host:port/db", f.redis)
	}
	if f.receiptKeys != "" {
		keys, err := loadReceiptKeys(f.receiptKeys)
		if err != nil {
			return f, usagef("taskd serve: %v", err)
		}
		f.keys = keys
	}
	return f, nil
}

// serve runs the API server until ctx is done, then shuts down gracefully.
func serve(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	log, err := f.log.logger(stderr)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	cfg, err := config.Load(f.config, config.WithRoutes(limitedRoutes()...))
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return usageError{err}
		}
		return usageError{fmt.Errorf("-config: %w", err)}
	}
	tlsConfig, err := f.tls.config()
	if err != nil {
		return usageError{err}
	}

	store, err := openTasks(ctx, f.db)
	if err != nil {
		return err
	}
	defer store.Close()

	limits, ready, closeLimits, err := openLimits(ctx, f)
	if err != nil {
		return err
	}
	defer closeLimits()

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	rules := make([]httplimit.Rule, len(cfg.Rules))
	var conflict []string
	for i, r := range cfg.Rules {
		// server_error: the middleware refunds every 5xx the handler writes.
		rules[i] = httplimit.Rule{Rule: r.Rule, Match: r.Match, FailOpen: r.FailOpen, RefundOn: r.RefundStatuses(), IdempotencyKey: r.IdempotencyKey}
		if r.RefundsOn(config.Conflict) {
			conflict = append(conflict, r.Name)
		}
	}
	obs, err := promlimit.New(registry)
	if err != nil {
		return err
	}
	mw, err := httplimit.New(httplimit.Config{
		Store:    limits,
		Rules:    rules,
		Key:      httplimit.FromContext(auth.UserFrom),
		Logger:   log,
		Observer: obs,
		Timeout:  cfg.Server.CheckTimeout,
	})
	if err != nil {
		return usageError{fmt.Errorf("rate limit rules: %w", err)}
	}

	refunds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "taskd_task_refunds_total",
		Help: "Refund attempts for tasks that failed in a worker or got stuck, by reason (worker_failure, stuck) and the refund's state after the attempt (done, pending: retried later, abandoned).",
	}, []string{"reason", "state"})
	states := newRefundStates(store, log)
	registry.MustRegister(refunds, states)
	upkeep, err := newUpkeep(store, cfg.Server.Retention, registry, log)
	if err != nil {
		return err
	}
	refunder := tasks.NewRefunder(store, refundFunc(mw, cfg.Rules), log,
		tasks.WithRefundHook(func(t tasks.Task, st tasks.RefundState, _ error) {
			states.Invalidate()
			refunds.WithLabelValues(t.RefundReason, string(st)).Inc()
		}))
	var authFailures *allowance.Limiter
	if cfg.Server.AuthFailures != (allowance.Limit{}) {
		if authFailures, err = allowance.NewLimiter(limits, api.AuthFailureRule(cfg.Server.AuthFailures)); err != nil {
			return usageError{fmt.Errorf("server.auth_failures: %w", err)}
		}
	}

	var pool *tasks.Pool
	opts := api.Options{
		Store:          upkeep.apiStore(), // notes each key's use
		Limiter:        mw,
		ConflictRefund: conflict,
		Registry:       registry,
		Ready:          ready,
		MaxBodyBytes:   cfg.Server.MaxBodyBytes,
		Logger:         log,
		// Failed authentications are limited per client IP, over the
		// limits store.
		AuthFailures:    authFailures,
		ClientIP:        httplimit.ClientIP(f.trustedProxies...),
		CheckTimeout:    cfg.Server.CheckTimeout,
		SeparateMetrics: f.metricsAddr != "",
	}
	if f.workers > 0 {
		pool = tasks.NewPool(store, tasks.Kinds(), f.workers, log,
			tasks.WithLease(cfg.Server.Lease),
			tasks.WithReaper(0, cfg.Server.MaxAttempts),
			tasks.WithGracePeriod(cfg.Server.ShutdownTimeout),
			tasks.WithOnFinish(func(_ context.Context, t tasks.Task) {
				if t.RefundState == tasks.RefundPending {
					states.Invalidate()
					refunder.Notify()
				}
			}),
		)
		opts.Workers = pool
	}
	srv, err := api.New(opts)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.addr, err)
	}
	var metrics *metricsServer
	if f.metricsAddr != "" {
		if metrics, err = serveMetrics(f.metricsAddr, srv.MetricsHandler(), log); err != nil {
			_ = ln.Close()
			return err
		}
		log.Info("metrics listening", "addr", metrics.Addr().String())
	}
	defer metrics.Close()
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSConfig:         tlsConfig,
	}
	limitsName := "memory"
	switch {
	case f.redis != "":
		limitsName = "redis"
	case f.redisCluster != "":
		limitsName = "redis-cluster"
	}
	log.Info("taskd listening", "addr", ln.Addr().String(), "tls", tlsConfig != nil, "db", dbKind(f.db), "limits", limitsName, "workers", f.workers, "rules", len(cfg.Rules))

	poolCtx, stopPool := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPool()
	poolDone := make(chan struct{})
	go func() {
		defer close(poolDone)
		if pool != nil {
			_ = pool.Run(poolCtx) // returns nil after a stop; it cannot already be running
		}
	}()
	refunderDone := make(chan struct{})
	go func() {
		defer close(refunderDone)
		_ = refunder.Run(poolCtx) // likewise
	}()
	upkeep.start(poolCtx)
	served := make(chan error, 1)
	go func() { served <- serveOn(hs, ln) }()

	select {
	case err = <-served:
		err = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		log.Info("shutting down: no new requests; running tasks get the shutdown timeout to finish (a second signal stops at once)", "timeout", cfg.Server.ShutdownTimeout)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
		if serr := hs.Shutdown(sctx); serr != nil {
			log.Warn("HTTP shutdown did not finish in time; closing connections", "err", serr)
			_ = hs.Close()
		}
		cancel()
	}
	// No request runs any more: settle what the limits store owes (voids of
	// uncertain charges, refunds it failed), within the shutdown timeout.
	dctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	if derr := mw.Shutdown(dctx); derr != nil {
		log.Warn("rate limit settlements left unmade at shutdown; each is logged above", "err", derr)
	}
	cancel()
	stopPool()
	<-poolDone
	<-refunderDone
	upkeep.wait()
	log.Info("taskd stopped")
	return err
}

// openTasks opens and migrates the task database.
func openTasks(ctx context.Context, dsn string) (tasks.Store, error) {
	store, err := taskdb.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("open task database: %w", err)
	}
	if err := store.Migrate(ctx); err != nil {
		store.Close()
		return nil, fmt.Errorf("migrate task database: %w", err)
	}
	return store, nil
}

func dbKind(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return "postgres"
	}
	return "sqlite"
}

// openLimits opens the rate-limit store the flags name, with its readiness
// check (none for the memory store) and a function that closes it.
func openLimits(ctx context.Context, f serveFlags) (allowance.Store, []api.Check, func(), error) {
	var ropts []redisstore.Option
	var mopts []memstore.Option
	if f.keys != nil {
		ropts = append(ropts, redisstore.WithReceiptKeys(f.keys))
		mopts = append(mopts, memstore.WithReceiptKeys(f.keys))
	}
	switch {
	case f.redis != "":
		s, err := rueidisstore.Open(ctx, f.redis, ropts...)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("open Redis limits store: %w", err)
		}
		return s, []api.Check{{Name: "limits", Ping: s.Ping}}, func() { _ = s.Close() }, nil
	case f.redisCluster != "":
		var addrs []string
		for _, a := range strings.Split(f.redisCluster, ",") {
			addrs = append(addrs, strings.TrimSpace(a))
		}
		s, err := rueidisstore.OpenCluster(ctx, addrs, ropts...)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("open Redis Cluster limits store: %w", err)
		}
		return s, []api.Check{{Name: "limits", Ping: s.Ping}}, func() { _ = s.Close() }, nil
	}
	s := memstore.New(mopts...)
	return s, nil, func() { _ = s.Close() }, nil
}

// refundFunc returns the Refunder's RefundFunc: it refunds the receipt of
// a task that failed in its worker (refund reason worker_failure) or got
// stuck (stuck) when a rule the receipt charged lists that reason in its
// refund_on, and returns the outcome to record with the task: the refund's
// outcome, or "skipped" when no rule asks for it.
func refundFunc(mw *httplimit.Middleware, rules []config.Rule) tasks.RefundFunc {
	byName := make(map[string]config.Rule, len(rules))
	for _, r := range rules {
		byName[r.Name] = r
	}
	return func(ctx context.Context, t tasks.Task) (string, error) {
		if len(t.Receipt) == 0 {
			return "skipped", nil
		}
		var rc allowance.Receipt
		if err := rc.UnmarshalBinary(t.Receipt); err != nil {
			return "", fmt.Errorf("decode the task's rate limit receipt: %w: %w", err, tasks.ErrPermanentRefund)
		}
		reason := config.RefundReason(t.RefundReason)
		wanted := false
		for _, r := range rc.Rules() {
			if byName[r.Name].RefundsOn(reason) {
				wanted = true
			}
		}
		if !wanted {
			return "skipped", nil
		}
		res, err := mw.RefundReceipt(ctx, &rc, string(reason))
		if err != nil {
			return "", err
		}
		return res.Outcome().String(), nil
	}
}
