// Command taskload measures taskd over loopback: requests per second and
// latency percentiles of the three request paths that matter, in one run of
// one taskd process, for each combination of task database (SQLite,
// PostgreSQL) and limits store (memory, Redis):
//
//   - GET /healthz, the bare server: no authentication, no limits, no
//     database. It is the baseline the other paths are compared with.
//   - POST /v1/tasks answered 409: the user has an active task, so the
//     submit is charged, conflicts in the database, is refunded
//     (refund_on: [conflict]) and answered with a problem document.
//   - POST /v1/tasks answered 202: a user without an active task; the submit
//     is charged and the task inserted with its receipt.
//
// Usage, from the repository root:
//
//	go run ./cmd/taskload [-n 4000] [-c 8] [-db sqlite,postgres] [-limits memory,redis]
//
// It builds cmd/taskd (or runs the binary -taskd names), creates a fresh
// task database for each combination (a temporary SQLite file; a new
// PostgreSQL database on the server $ALLOWANCE_TEST_POSTGRES names, dropped
// afterwards), starts its own redis-server on a free loopback port, and
// runs taskd with -workers 0 so that accepted tasks stay queued and no
// worker competes for the CPU. API keys and the conflicting users' active
// tasks are written to the database before taskd starts. Each path gets
// -warmup unmeasured requests, then -n measured ones from -c concurrent
// clients, bounded by -max-time. It prints one Markdown table per
// combination, with ratios against /healthz measured in the same process.
// taskd CPU per request is read from /proc (Linux only) and, unlike wall
// time, is not inflated by other load on the machine.
//
// This is a load command, not a test: nothing is asserted about speed.
// Every measured request must get its expected status, else the command
// fails.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/allowancehq/allowance/app/internal/auth"
	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/taskdb"
)

// defaultPostgres is the server used when $ALLOWANCE_TEST_POSTGRES is unset.
const defaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// config is the taskd configuration of the run: the default rules with
// limits high enough never to deny, so that every request takes the path
// it is meant to measure.
const config = `
server:
  shutdown_timeout: 10s
rules:
  - name: create-task
    match: POST /v1/tasks
    limits: 100000000/minute
    algorithm: sliding-window
    refund_on: [conflict]
  - name: read
    match: GET /v1/
    limits: 100000000/minute
`

const submitBody = `{"kind":"sleep","input":{"seconds":3600}}`

type options struct {
	taskd       string
	n, c        int
	warmup      int
	maxTime     time.Duration
	dbs         []string
	limits      []string
	postgres    string
	redisServer string
	logLevel    string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "taskload:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	var dbs, limits string
	flag.StringVar(&o.taskd, "taskd", "", "taskd binary to run; empty: build ./cmd/taskd with the go command (run from the repository root)")
	flag.IntVar(&o.n, "n", 4000, "measured requests per path")
	flag.IntVar(&o.c, "c", 8, "concurrent clients")
	flag.IntVar(&o.warmup, "warmup", 300, "unmeasured requests per path before the measured ones")
	flag.DurationVar(&o.maxTime, "max-time", 60*time.Second, "upper bound of one path's measurement; fewer than -n requests are measured when it runs out")
	flag.StringVar(&dbs, "db", "sqlite,postgres", "task databases to measure, comma-separated: sqlite, postgres")
	flag.StringVar(&limits, "limits", "memory,redis", "limits stores to measure, comma-separated: memory, redis")
	flag.StringVar(&o.postgres, "postgres", "", "PostgreSQL server URL whose user may create databases; empty: $ALLOWANCE_TEST_POSTGRES, else "+defaultPostgres)
	flag.StringVar(&o.redisServer, "redis-server", "redis-server", "redis-server binary")
	flag.StringVar(&o.logLevel, "log-level", "warn", "taskd's -log-level (info logs every request)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; all settings are flags (see -h)", flag.Args())
	}
	if o.n < 1 || o.c < 1 || o.warmup < 0 || o.maxTime <= 0 {
		return fmt.Errorf("-n %d, -c %d, -warmup %d, -max-time %v: expected n ≥ 1, c ≥ 1, warmup ≥ 0, max-time > 0", o.n, o.c, o.warmup, o.maxTime)
	}
	o.dbs = strings.Split(dbs, ",")
	o.limits = strings.Split(limits, ",")
	for _, d := range o.dbs {
		if d != "sqlite" && d != "postgres" {
			return fmt.Errorf("-db %q: unknown database %q; expected sqlite or postgres", dbs, d)
		}
	}
	for _, l := range o.limits {
		if l != "memory" && l != "redis" {
			return fmt.Errorf("-limits %q: unknown store %q; expected memory or redis", limits, l)
		}
	}
	if o.postgres == "" {
		o.postgres = cmp(os.Getenv("ALLOWANCE_TEST_POSTGRES"), defaultPostgres)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tmp, err := os.MkdirTemp("", "taskload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if o.taskd == "" {
		o.taskd = filepath.Join(tmp, "taskd")
		build := exec.CommandContext(ctx, "go", "build", "-o", o.taskd, "./cmd/taskd")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build ./cmd/taskd (run from the repository root, or give -taskd): %w", err)
		}
	}
	cfg := filepath.Join(tmp, "taskd.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return err
	}

	fmt.Printf("taskload: -n %d -c %d -warmup %d, GOMAXPROCS %d, %d CPUs, %s/%s, %s\n",
		o.n, o.c, o.warmup, runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format(time.RFC3339))
	for _, db := range o.dbs {
		for _, lim := range o.limits {
			if err := combination(ctx, o, tmp, cfg, db, lim); err != nil {
				return fmt.Errorf("%s + %s limits: %w", db, lim, err)
			}
		}
	}
	return nil
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// combination measures the three paths on one task database and limits
// store, and prints their table.
func combination(ctx context.Context, o options, tmp, cfg, db, lim string) error {
	var dsn string
	switch db {
	case "sqlite":
		dir, err := os.MkdirTemp(tmp, "sqlite-")
		if err != nil {
			return err
		}
		dsn = "sqlite:" + filepath.Join(dir, "taskd.db")
	case "postgres":
		u, drop, err := createDatabase(ctx, o.postgres)
		if err != nil {
			return err
		}
		defer drop()
		dsn = u
	}
	conflictKeys, acceptKeys, err := seed(ctx, dsn, o.c, o.warmup+o.n)
	if err != nil {
		return fmt.Errorf("seed the task database: %w", err)
	}

	args := []string{"serve", "-db", dsn, "-config", cfg, "-workers", "0", "-log-level", o.logLevel}
	if lim == "redis" {
		addr, stopRedis, err := startRedis(ctx, o.redisServer)
		if err != nil {
			return err
		}
		defer stopRedis()
		args = append(args, "-redis", "redis://"+addr+"/0")
	}
	d, err := startTaskd(ctx, o.taskd, args)
	if err != nil {
		return err
	}
	defer d.stop()

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: o.c, MaxIdleConnsPerHost: o.c, MaxConnsPerHost: o.c, DisableCompression: true,
	}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	healthz := func(int) (*http.Request, error) { return http.NewRequest("GET", d.base+"/healthz", nil) }
	submit := func(key string) (*http.Request, error) {
		r, err := http.NewRequest("POST", d.base+"/v1/tasks", strings.NewReader(submitBody))
		if err != nil {
			return nil, err
		}
		r.Header.Set("Authorization", "Bearer "+key)
		r.Header.Set("Content-Type", "application/json")
		return r, nil
	}
	paths := []struct {
		name   string
		status int
		req    func(i int) (*http.Request, error)
	}{
		{"GET /healthz", http.StatusOK, healthz},
		{"POST /v1/tasks → 409", http.StatusConflict, func(i int) (*http.Request, error) { return submit(conflictKeys[i%len(conflictKeys)]) }},
		{"POST /v1/tasks → 202", http.StatusAccepted, func(i int) (*http.Request, error) { return submit(acceptKeys[i]) }},
	}
	var results []result
	for _, p := range paths {
		if _, err := load(ctx, client, d.pid, 0, o.warmup, o.c, o.maxTime, p.status, p.req); err != nil {
			return fmt.Errorf("%s warm-up: %w", p.name, err)
		}
		r, err := load(ctx, client, d.pid, o.warmup, o.n, o.c, o.maxTime, p.status, p.req)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		r.name = p.name
		results = append(results, r)
	}
	printTable(db, lim, results)
	return nil
}

// seed creates the task schema, conflicting users (one per client, each
// with an active task) and accepted users (one per accepted request) with
// their API keys, and returns the keys.
func seed(ctx context.Context, dsn string, conflicting, accepted int) (conflictKeys, acceptKeys []string, err error) {
	store, err := taskdb.Open(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return nil, nil, err
	}
	newKeys := func(prefix string, n int, active bool) ([]string, error) {
		keys := make([]string, n)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		next := atomic.Int64{}
		for range 8 { // PostgreSQL takes the keys in parallel; SQLite serialises them
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					user := fmt.Sprintf("%s%d", prefix, i)
					key, hash := auth.NewKey()
					if err := store.CreateAPIKey(ctx, user, hash); err != nil {
						errs <- err
						return
					}
					if active {
						if _, err := store.Create(ctx, tasks.Task{UserID: user, Kind: "sleep", Input: []byte(`{"seconds":3600}`)}); err != nil {
							errs <- err
							return
						}
					}
					keys[i] = key
				}
			})
		}
		wg.Wait()
		close(errs)
		return keys, <-errs
	}
	if conflictKeys, err = newKeys("busy", conflicting, true); err != nil {
		return nil, nil, err
	}
	if acceptKeys, err = newKeys("fresh", accepted, false); err != nil {
		return nil, nil, err
	}
	return conflictKeys, acceptKeys, nil
}

// createDatabase creates a fresh database on the server admin names and
// returns its URL and a function that drops it.
func createDatabase(ctx context.Context, admin string) (string, func(), error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, fmt.Errorf("-postgres %q: expected a postgres:// URL: %w", admin, err)
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PostgreSQL at %s: %w", u.Redacted(), err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "taskload_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		conn.Close(ctx)
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := conn.Exec(dctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			slog.Warn("drop database", "name", name, "err", err)
		}
		conn.Close(dctx)
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startRedis starts a redis-server that keeps nothing on disk on a free
// loopback port and returns its address and a function that stops it.
func startRedis(ctx context.Context, bin string) (string, func(), error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start %s: %w", bin, err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, stop, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", nil, fmt.Errorf("redis-server on %s did not listen within 10s: %s", addr, out.String())
		}
	}
}

type daemon struct {
	cmd  *exec.Cmd
	pid  int
	base string
	logs *bytes.Buffer
}

// startTaskd runs taskd with args on a free port and waits until /readyz
// answers 200.
func startTaskd(ctx context.Context, bin string, args []string) (*daemon, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	d := &daemon{base: "http://" + addr, logs: &bytes.Buffer{}}
	d.cmd = exec.Command(bin, append(args, "-addr", addr)...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "TASKD_") })
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start taskd: %w", err)
	}
	d.pid = d.cmd.Process.Pid
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(d.base + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d.stop()
			return nil, fmt.Errorf("taskd not ready within 30s: %v\n%s", err, d.logs)
		}
	}
}

// stop ends taskd with SIGTERM and waits for it.
func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
	}
}

// result is the measurement of one path.
type result struct {
	name     string
	n        int
	elapsed  time.Duration
	p50, p99 time.Duration
	cpu      time.Duration // taskd's CPU time over the measurement; < 0 unknown
}

func (r result) rps() float64 { return float64(r.n) / r.elapsed.Seconds() }

// load sends requests from..from+n-1 (req builds request i) from c
// concurrent clients, stopping early after maxTime, and measures them.
// Every response must have status want.
func load(ctx context.Context, client *http.Client, pid, from, n, c int, maxTime time.Duration, want int, req func(i int) (*http.Request, error)) (result, error) {
	if n == 0 {
		return result{}, nil
	}
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	cpu0 := cpuTime(pid)
	start := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for ctx.Err() == nil && failed.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				r, err := req(from + i)
				if err == nil {
					t0 := time.Now()
					var resp *http.Response
					if resp, err = client.Do(r.WithContext(ctx)); err == nil {
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						lat[i] = time.Since(t0)
						if resp.StatusCode != want {
							err = fmt.Errorf("request %d: status %d, want %d: %s", from+i, resp.StatusCode, want, body)
						}
					}
				}
				if err != nil && ctx.Err() == nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if p := failed.Load(); p != nil {
		return result{}, *p
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return result{}, err
	}
	done := min(int(next.Load()), n)
	lat = slices.DeleteFunc(lat[:done], func(d time.Duration) bool { return d == 0 }) // cut short by max-time
	if len(lat) == 0 {
		return result{}, fmt.Errorf("no request finished within %v", maxTime)
	}
	slices.Sort(lat)
	r := result{n: len(lat), elapsed: elapsed, p50: percentile(lat, 0.50), p99: percentile(lat, 0.99), cpu: -1}
	if cpu0 >= 0 {
		if cpu1 := cpuTime(pid); cpu1 >= 0 {
			r.cpu = cpu1 - cpu0
		}
	}
	return r, nil
}

// percentile returns the q-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// cpuTime returns the user+system CPU time of process pid from
// /proc/pid/stat, or -1 where that cannot be read.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3, utime 14, stime 15.
	_, rest, ok := bytes.Cut(b, []byte(") "))
	if !ok {
		return -1
	}
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	const ticks = 100 // USER_HZ, fixed at 100 on Linux for /proc
	return time.Duration(ut+st) * time.Second / ticks
}

// printTable prints one combination's results as a Markdown table, with
// ratios against the first row (GET /healthz).
func printTable(db, lim string, rs []result) {
	fmt.Printf("\n%s tasks, %s limits\n\n", db, lim)
	fmt.Println("| path | requests | req/s | p50 | p99 | taskd CPU/req | req/s vs /healthz | p50 vs /healthz |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	base := rs[0]
	for _, r := range rs {
		cpu := "n/a"
		if r.cpu >= 0 {
			cpu = fmt.Sprintf("%.0f µs", float64(r.cpu.Microseconds())/float64(r.n))
		}
		fmt.Printf("| %s | %d | %.0f | %s | %s | %s | %.2f× | %.1f× |\n",
			r.name, r.n, r.rps(), round(r.p50), round(r.p99), cpu, r.rps()/base.rps(), float64(r.p50)/float64(base.p50))
	}
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
