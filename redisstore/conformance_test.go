package redisstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// contention is the number of goroutines of the suite's contention tests.
const contention = 2000

var prefixes atomic.Int64

// freshPrefix gives each store of a test its own keys on a shared server.
func freshPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

// rueidisFactory makes stores over one rueidis client to addrs.
func rueidisFactory(t *testing.T, addrs []string) storetest.Factory {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatalf("rueidis client for %v: %v", addrs, err)
	}
	t.Cleanup(c.Close)
	return func(t *testing.T, clock *storetest.Clock) allowance.Store {
		s, err := redisstore.NewRueidis(c, redisstore.WithPrefix(freshPrefix()), redisstore.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// goRedisFactory makes stores over one go-redis client.
func goRedisFactory(t *testing.T, c redis.UniversalClient) storetest.Factory {
	t.Cleanup(func() { c.Close() })
	return func(t *testing.T, clock *storetest.Clock) allowance.Store {
		s, err := redisstore.NewGoRedis(c, redisstore.WithPrefix(freshPrefix()), redisstore.WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func TestConformanceSingleNode(t *testing.T) {
	addr := redistest.Server(t)
	t.Run("rueidis", func(t *testing.T) {
		storetest.Run(t, rueidisFactory(t, []string{addr}), storetest.Options{Concurrency: contention})
	})
	t.Run("go-redis", func(t *testing.T) {
		c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
		storetest.Run(t, goRedisFactory(t, c), storetest.Options{Concurrency: contention})
	})
}

func TestConformanceCluster(t *testing.T) {
	addrs := redistest.Cluster(t)
	t.Run("rueidis", func(t *testing.T) {
		storetest.Run(t, rueidisFactory(t, addrs), storetest.Options{Concurrency: contention})
	})
	t.Run("go-redis", func(t *testing.T) {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 64})
		storetest.Run(t, goRedisFactory(t, c), storetest.Options{Concurrency: contention})
	})
}

func TestOpen(t *testing.T) {
	addr := redistest.Server(t)
	ctx := context.Background()
	s, err := redisstore.Open(ctx, "redis://"+addr+"/0")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if _, err := redisstore.Open(ctx, "http://"+addr); err == nil {
		t.Fatal("Open accepted an http:// url")
	}
	if _, err := redisstore.Open(ctx, "redis://"+addr, redisstore.WithPrefix("a{b")); err == nil {
		t.Fatal("Open accepted a prefix with '{'")
	}
}
