package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

var (
	//go:embed scripts/common.lua
	commonLua string
	//go:embed scripts/charge.lua
	chargeLua string
	//go:embed scripts/refund.lua
	refundLua string
	//go:embed scripts/peek.lua
	peekLua string
)

// scriptID names one of the store's scripts.
type scriptID int

const (
	scriptCharge scriptID = iota
	scriptRefund
	scriptPeek
	numScripts
)

// scriptSources returns the full source of every script, the shared helpers
// first.
func scriptSources() [numScripts]string {
	return [numScripts]string{
		scriptCharge: commonLua + chargeLua,
		scriptRefund: commonLua + refundLua,
		scriptPeek:   commonLua + peekLua,
	}
}

// client is what the store needs from a Redis client. Each adapter runs the
// scripts by SHA (EVALSHA), falling back to EVAL when the server's script
// cache does not have them.
type client interface {
	// eval runs a script and returns its array of integers.
	eval(ctx context.Context, s scriptID, keys, args []string) ([]int64, error)
	// evalText runs a script and returns its string.
	evalText(ctx context.Context, s scriptID, keys, args []string) (string, error)
	// del deletes keys of one hash slot.
	del(ctx context.Context, keys []string) error
	// setNXGet sets key to value unless it is set (SET NX GET) and returns
	// the value it holds after.
	setNXGet(ctx context.Context, key, value string) (string, error)
	ping(ctx context.Context) error
	close()
	// mayHaveApplied reports whether a failed command may still have been
	// executed by the server (the request may have left).
	mayHaveApplied(err error) bool
}

// dialError reports whether err is a failure to connect: no command left.
func dialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

type rueidisClient struct {
	c       rueidis.Client
	scripts [numScripts]*rueidis.Lua
	owned   bool
}

func newRueidisClient(c rueidis.Client, owned bool) *rueidisClient {
	rc := &rueidisClient{c: c, owned: owned}
	for i, src := range scriptSources() {
		rc.scripts[i] = rueidis.NewLuaScript(src)
	}
	return rc
}

func (r *rueidisClient) eval(ctx context.Context, s scriptID, keys, args []string) ([]int64, error) {
	return r.scripts[s].Exec(ctx, r.c, keys, args).AsIntSlice()
}

func (r *rueidisClient) evalText(ctx context.Context, s scriptID, keys, args []string) (string, error) {
	return r.scripts[s].Exec(ctx, r.c, keys, args).ToString()
}

func (r *rueidisClient) del(ctx context.Context, keys []string) error {
	return r.c.Do(ctx, r.c.B().Del().Key(keys...).Build()).Error()
}

func (r *rueidisClient) setNXGet(ctx context.Context, key, value string) (string, error) {
	old, err := r.c.Do(ctx, r.c.B().Set().Key(key).Value(value).Nx().Get().Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return value, nil
	}
	return old, err
}

func (r *rueidisClient) ping(ctx context.Context) error {
	return r.c.Do(ctx, r.c.B().Ping().Build()).Error()
}

func (r *rueidisClient) close() {
	if r.owned {
		r.c.Close()
	}
}

func (r *rueidisClient) mayHaveApplied(err error) bool {
	if _, ok := rueidis.IsRedisErr(err); ok {
		return false // the server answered with an error
	}
	if errors.Is(err, rueidis.ErrClosing) || dialError(err) {
		return false
	}
	return true
}

type goRedisClient struct {
	c       redis.UniversalClient
	scripts [numScripts]*redis.Script
}

func newGoRedisClient(c redis.UniversalClient) *goRedisClient {
	gc := &goRedisClient{c: c}
	for i, src := range scriptSources() {
		gc.scripts[i] = redis.NewScript(src)
	}
	return gc
}

func (g *goRedisClient) eval(ctx context.Context, s scriptID, keys, args []string) ([]int64, error) {
	a := make([]any, len(args))
	for i, v := range args {
		a[i] = v
	}
	return g.scripts[s].Run(ctx, g.c, keys, a...).Int64Slice()
}

func (g *goRedisClient) evalText(ctx context.Context, s scriptID, keys, args []string) (string, error) {
	a := make([]any, len(args))
	for i, v := range args {
		a[i] = v
	}
	return g.scripts[s].Run(ctx, g.c, keys, a...).Text()
}

func (g *goRedisClient) del(ctx context.Context, keys []string) error {
	return g.c.Del(ctx, keys...).Err()
}

func (g *goRedisClient) setNXGet(ctx context.Context, key, value string) (string, error) {
	old, err := g.c.SetArgs(ctx, key, value, redis.SetArgs{Mode: "NX", Get: true}).Result()
	if errors.Is(err, redis.Nil) {
		return value, nil
	}
	return old, err
}

func (g *goRedisClient) ping(ctx context.Context) error {
	return g.c.Ping(ctx).Err()
}

func (g *goRedisClient) close() {}

func (g *goRedisClient) mayHaveApplied(err error) bool {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return false // the server answered with an error
	}
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) || dialError(err) {
		return false
	}
	return true
}
