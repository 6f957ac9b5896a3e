// Command redisinstr makes the calls whose cost run.sh (beside it) counts:
// it sends -n calls of one kind, one at a time, to a redis-server running
// under valgrind --tool=callgrind, zeroing the server's counters before them
// and dumping them after (callgrind_control -z and -d on -pid), so that the
// dump holds exactly those calls' instructions. Warm-up calls before the
// zero load the scripts and create the keys.
//
//	redisinstr -addr 127.0.0.1:7000 -pid 1234 [-n 2000] [-mode check] [-limits 1] [-keys 1] [-trace=true] [-algorithm gcra]
//
// Modes: check (allowance over redisstore, rueidis), refund (a check and the
// refund of its receipt), trivial (EVALSHA of "return
// redis.call('INCR', KEYS[1])"), ulule (github.com/ulule/limiter/v3 Get over
// go-redis), redis_rate (github.com/go-redis/redis_rate/v10 Allow).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os/exec"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	ulule "github.com/ulule/limiter/v3"
	ulredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "the redis-server under callgrind")
	pid := flag.Int("pid", 0, "its process id, for callgrind_control")
	n := flag.Int("n", 2000, "calls counted")
	mode := flag.String("mode", "check", "check, refund, trivial, ulule or redis_rate")
	limits := flag.Int("limits", 1, "limits of the rule: 1 or 3 (check and refund)")
	keys := flag.Int("keys", 1, "identities the calls spread over")
	trace := flag.Bool("trace", true, "write charge traces (false: redisstore.WithTraceTTL(0))")
	alg := flag.String("algorithm", "gcra", "the rule's algorithm (check and refund)")
	flag.Parse()
	if err := run(*addr, *pid, *n, *mode, *limits, *keys, *trace, *alg); err != nil {
		log.Fatal(err)
	}
}

func run(addr string, pid, n int, mode string, limits, keys int, trace bool, algName string) error {
	if pid <= 0 || n <= 0 || keys <= 0 {
		return fmt.Errorf("-pid %d, -n %d, -keys %d: expected all above zero", pid, n, keys)
	}
	op, err := newOp(addr, mode, limits, trace, algName)
	if err != nil {
		return err
	}
	ctx := context.Background()
	call := func(i int) error { return op(ctx, "user-"+strconv.Itoa(i%keys)) }
	for i := range min(keys, 1000) + 200 {
		if err := call(i); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	if out, err := exec.Command("callgrind_control", "-z", strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("callgrind_control -z %d: %w: %s", pid, err, out)
	}
	for i := range n {
		if err := call(i); err != nil {
			return err
		}
	}
	if out, err := exec.Command("callgrind_control", "-d", strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("callgrind_control -d %d: %w: %s", pid, err, out)
	}
	return nil
}

// newOp returns one call of mode.
func newOp(addr, mode string, limits int, trace bool, algName string) (func(ctx context.Context, key string) error, error) {
	prefix := "ri" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	switch mode {
	case "check", "refund":
		alg, err := allowance.ParseAlgorithm(algName)
		if err != nil {
			return nil, err
		}
		ls := allowance.Limits{{Count: 1_000_000_000, Period: time.Hour}}
		switch limits {
		case 1:
		case 3:
			ls = append(ls, allowance.Limit{Count: 1_000_000_000, Period: 24 * time.Hour}, allowance.Limit{Count: 999_999_999, Period: time.Minute})
		default:
			return nil, fmt.Errorf("-limits %d: expected 1 or 3", limits)
		}
		rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			return nil, err
		}
		opts := []redisstore.Option{redisstore.WithPrefix(prefix)}
		if !trace {
			opts = append(opts, redisstore.WithTraceTTL(0))
		}
		s, err := rueidisstore.New(rc, opts...)
		if err != nil {
			return nil, err
		}
		l, err := allowance.NewLimiter(s, allowance.Rule{Name: "r", Limits: ls, Algorithm: alg})
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, key string) error {
			d, err := l.Check(ctx, key)
			if err != nil {
				return err
			}
			if !d.Allowed {
				return errors.New("check denied; the limits are meant never to deny")
			}
			if mode == "refund" {
				_, err = l.Refund(ctx, &d.Receipt)
			}
			return err
		}, nil
	case "trivial":
		rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			return nil, err
		}
		script := rueidis.NewLuaScript("return redis.call('INCR', KEYS[1])")
		return func(ctx context.Context, key string) error {
			return script.Exec(ctx, rc, []string{prefix + key}, nil).Error()
		}, nil
	case "ulule":
		store, err := ulredis.NewStoreWithOptions(redis.NewClient(&redis.Options{Addr: addr}), ulule.StoreOptions{Prefix: prefix, MaxRetry: 3})
		if err != nil {
			return nil, err
		}
		l := ulule.New(store, ulule.Rate{Period: time.Hour, Limit: 1_000_000_000})
		return func(ctx context.Context, key string) error {
			_, err := l.Get(ctx, key)
			return err
		}, nil
	case "redis_rate":
		l := redis_rate.NewLimiter(redis.NewClient(&redis.Options{Addr: addr}))
		limit := redis_rate.Limit{Rate: 1_000_000_000, Burst: 1_000_000_000, Period: time.Hour}
		return func(ctx context.Context, key string) error {
			_, err := l.Allow(ctx, prefix+key, limit)
			return err
		}, nil
	}
	return nil, fmt.Errorf("-mode %q: expected check, refund, trivial, ulule or redis_rate", mode)
}
