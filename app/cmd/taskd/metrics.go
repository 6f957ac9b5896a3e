package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allowancehq/allowance/app/tasks"
)

// refundCountMaxAge bounds how old the refund record counts of a scrape
// may be: a scrape later than this after the last count counts again.
const refundCountMaxAge = 10 * time.Second

// refundCountTimeout bounds one count of the refund records.
const refundCountTimeout = 5 * time.Second

// refundStates is a Prometheus collector of the durable refund records by
// state (pending, done, abandoned), counted in the task database
// (tasks.Store.CountRefunds), so every replica reports the same figures.
//
// The count is not made at every scrape: a scrape gets the last count while
// it is younger than refundCountMaxAge and this process changed no refund
// record since (Invalidate). Changes made by other replicas thus show within
// refundCountMaxAge, this process's own at the next scrape, and however
// often /metrics is scraped the database counts at most once per
// refundCountMaxAge plus once per local change. Concurrent scrapes share one
// count. A failed count is logged and reported as no samples, and is not
// retried before refundCountMaxAge.
type refundStates struct {
	store tasks.Store
	log   *slog.Logger
	now   func() time.Time

	dirty atomic.Bool // a local change since the last count

	mu      sync.Mutex // held during a count, so that scrapes share it
	counted time.Time  // when the last count was made; zero: never
	counts  tasks.RefundCounts
	err     error // of the last count
}

func newRefundStates(store tasks.Store, log *slog.Logger) *refundStates {
	return &refundStates{store: store, log: log, now: time.Now}
}

// Invalidate says that this process changed a refund record: the next
// scrape counts again.
func (c *refundStates) Invalidate() { c.dirty.Store(true) }

var refundStatesDesc = prometheus.NewDesc("taskd_task_refund_records",
	"Tasks with a durable refund record, by the record's state: pending (not yet made, or retried after a failure), done, abandoned (given up after repeated failures). Counted in the task database, so all replicas agree; at most 10s old, and recounted after this process changes a record.",
	[]string{"state"}, nil)

// Describe sends the collector's one metric description.
func (c *refundStates) Describe(ch chan<- *prometheus.Desc) { ch <- refundStatesDesc }

// Collect reports the refund records, counted again when the last count is
// too old or this process changed a record since.
func (c *refundStates) Collect(ch chan<- prometheus.Metric) {
	n, err := c.get()
	if err != nil {
		return
	}
	for _, s := range []struct {
		state string
		n     int
	}{{"pending", n.Pending}, {"done", n.Done}, {"abandoned", n.Abandoned}} {
		ch <- prometheus.MustNewConstMetric(refundStatesDesc, prometheus.GaugeValue, float64(s.n), s.state)
	}
}

func (c *refundStates) get() (tasks.RefundCounts, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.dirty.Load() && !c.counted.IsZero() && now.Sub(c.counted) < refundCountMaxAge {
		return c.counts, c.err
	}
	// A change made while counting may not be in this count: it sets
	// dirty again for the next scrape.
	c.dirty.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), refundCountTimeout)
	defer cancel()
	c.counts, c.err = c.store.CountRefunds(ctx)
	c.counted = now
	if c.err != nil {
		c.log.Warn("count refund records for /metrics", "err", c.err)
	}
	return c.counts, c.err
}

// metricsServer serves GET /metrics on a listener of its own (-metrics-addr).
type metricsServer struct {
	hs *http.Server
	ln net.Listener
}

// serveMetrics listens on addr and serves h, a handler of GET /metrics, in
// the background until Close. It stopping by itself (the listener failed)
// is logged at ERROR; the API goes on.
func serveMetrics(addr string, h http.Handler, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on -metrics-addr %s: %w", addr, err)
	}
	m := &metricsServer{
		hs: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln: ln,
	}
	go func() {
		if err := m.hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped; /metrics is no longer served", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return m, nil
}

// Addr is the address the server listens on.
func (m *metricsServer) Addr() net.Addr { return m.ln.Addr() }

// Close stops the server and its connections. A nil *metricsServer does
// nothing.
func (m *metricsServer) Close() {
	if m != nil {
		_ = m.hs.Close()
	}
}
