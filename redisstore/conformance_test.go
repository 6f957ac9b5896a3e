package redisstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/goredisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/allowancehq/allowance/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// contention is the number of goroutines of the suite's contention tests.
const contention = 2000

var prefixes atomic.Int64

// freshPrefix gives each store of a test its own keys on a shared server.
func freshPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

// keyed turns a constructor of stores into the suite's factories: the
// default one (the receipt key shared through Redis, one per fresh prefix)
// and the one with the keys given.
func keyed(newStore func(opts ...redisstore.Option) (*redisstore.Store, error)) (storetest.Factory, storetest.KeyedFactory) {
	k := func(t *testing.T, clock *storetest.Clock, keys *allowance.ReceiptKeys) allowance.Store {
		opts := []redisstore.Option{redisstore.WithPrefix(freshPrefix()), redisstore.WithClock(clock.Now)}
		if keys != nil {
			opts = append(opts, redisstore.WithReceiptKeys(keys))
		}
		s, err := newStore(opts...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return func(t *testing.T, clock *storetest.Clock) allowance.Store { return k(t, clock, nil) }, k
}

// rueidisFactory makes stores over one rueidis client to addrs, with the
// receipt key shared through Redis.
func rueidisFactory(t *testing.T, addrs []string) storetest.Factory {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatalf("rueidis client for %v: %v", addrs, err)
	}
	t.Cleanup(c.Close)
	f, _ := keyed(func(opts ...redisstore.Option) (*redisstore.Store, error) { return rueidisstore.New(c, opts...) })
	return f
}

// runRueidis runs the suite with stores over one rueidis client to addrs.
func runRueidis(t *testing.T, addrs []string) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatalf("rueidis client for %v: %v", addrs, err)
	}
	t.Cleanup(c.Close)
	runClient(t, func(opts ...redisstore.Option) (*redisstore.Store, error) { return rueidisstore.New(c, opts...) })
}

// runGoRedis runs the suite with stores over one go-redis client.
func runGoRedis(t *testing.T, c redis.UniversalClient) {
	t.Cleanup(func() { c.Close() })
	runClient(t, func(opts ...redisstore.Option) (*redisstore.Store, error) { return goredisstore.New(c, opts...) })
}

func runClient(t *testing.T, newStore func(opts ...redisstore.Option) (*redisstore.Store, error)) {
	f, k := keyed(newStore)
	storetest.Run(t, f, storetest.Options{Concurrency: contention, Keyed: k})
}

func TestConformanceSingleNode(t *testing.T) {
	addr := redistest.Server(t)
	t.Run("rueidis", func(t *testing.T) { runRueidis(t, []string{addr}) })
	t.Run("go-redis", func(t *testing.T) {
		runGoRedis(t, redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64}))
	})
}

func TestConformanceCluster(t *testing.T) {
	addrs := redistest.Cluster(t)
	t.Run("rueidis", func(t *testing.T) { runRueidis(t, addrs) })
	t.Run("go-redis", func(t *testing.T) {
		runGoRedis(t, redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 64}))
	})
}

func TestOpen(t *testing.T) {
	addr := redistest.Server(t)
	ctx := context.Background()
	s, err := rueidisstore.Open(ctx, "redis://"+addr+"/0")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if _, err := rueidisstore.Open(ctx, "http://"+addr); err == nil {
		t.Fatal("Open accepted an http:// url")
	}
	if _, err := rueidisstore.Open(ctx, "redis://"+addr, redisstore.WithPrefix("a{b")); err == nil {
		t.Fatal("Open accepted a prefix with '{'")
	}
}
