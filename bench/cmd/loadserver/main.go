// Command loadserver is the server of the loopback load test (run.sh beside
// it): a trivial handler, bare or behind a rate limiter, so that wrk can
// compare requests per second.
//
//	loadserver -mode bare|memstore|redis|ulule [-algorithm sliding-window] [-addr 127.0.0.1:8090] [-redis 127.0.0.1:6379] [-cpuprofile file]
//
// memstore and redis put httplimit in front of the handler (one rule, one
// limit counted with -algorithm, identity from the X-User header); ulule puts
// github.com/ulule/limiter/v3's net/http middleware over Redis in front of it
// (fixed window, same header). Limits are high enough that nothing is denied:
// the test measures the cost of checking, not of refusing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/httplimit"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	mstdlib "github.com/ulule/limiter/v3/drivers/middleware/stdlib"
	sredis "github.com/ulule/limiter/v3/drivers/store/redis"
)

func main() {
	mode := flag.String("mode", "bare", "bare, memstore, redis or ulule")
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address (redis and ulule modes)")
	alg := flag.String("algorithm", "sliding-window", "httplimit's algorithm (memstore and redis modes)")
	traceTTL := flag.Duration("trace-ttl", redisstore.DefaultTraceTTL, "redisstore's WithTraceTTL (redis mode; 0 writes no trace)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile to this file until the server stops")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	if err := run(*mode, *addr, *redisAddr, *alg, *traceTTL); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

const (
	limitCount  = 1_000_000_000
	limitPeriod = time.Hour
)

func run(mode, addr, redisAddr, algName string, traceTTL time.Duration) error {
	alg, err := allowance.ParseAlgorithm(algName)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	var h http.Handler
	switch mode {
	case "bare":
		h = ok
	case "memstore":
		s := memstore.New()
		defer s.Close()
		m, err := newAllowance(s, alg)
		if err != nil {
			return err
		}
		h = m.Handler(ok)
	case "redis":
		s, err := rueidisstore.Open(ctx, "redis://"+redisAddr+"/0", redisstore.WithPrefix(fmt.Sprintf("load%d:", time.Now().UnixNano())), redisstore.WithTraceTTL(traceTTL))
		if err != nil {
			return err
		}
		defer s.Close()
		m, err := newAllowance(s, alg)
		if err != nil {
			return err
		}
		h = m.Handler(ok)
	case "ulule":
		c := redis.NewClient(&redis.Options{Addr: redisAddr})
		defer c.Close()
		store, err := sredis.NewStoreWithOptions(c, limiter.StoreOptions{Prefix: fmt.Sprintf("ulule%d", time.Now().UnixNano()), MaxRetry: 3})
		if err != nil {
			return fmt.Errorf("ulule redis store: %w", err)
		}
		lim := limiter.New(store, limiter.Rate{Period: limitPeriod, Limit: limitCount})
		h = mstdlib.NewMiddleware(lim, mstdlib.WithKeyGetter(func(r *http.Request) string { return r.Header.Get("X-User") })).Handler(ok)
	default:
		return fmt.Errorf("mode %q: expected bare, memstore, redis or ulule", mode)
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("loadserver: mode %s on %s", mode, addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func newAllowance(s allowance.Store, alg allowance.Algorithm) (*httplimit.Middleware, error) {
	return httplimit.New(httplimit.Config{
		Store: s,
		Key:   httplimit.FromHeader("X-User"),
		Rules: []httplimit.Rule{{
			Rule:  allowance.Rule{Name: "all", Limits: allowance.Limits{{Count: limitCount, Period: limitPeriod}}, Algorithm: alg},
			Match: "/",
		}},
	})
}
