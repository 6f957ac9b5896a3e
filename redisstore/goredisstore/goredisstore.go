// Package goredisstore makes a redisstore.Store over a
// github.com/redis/go-redis client, for programs that already use one.
// Package rueidisstore is the other client (and the one Open-by-URL
// programs are pointed to); a program imports the one it uses and builds
// only that client.
//
//	store, err := goredisstore.New(redis.NewClient(&redis.Options{Addr: addr}))
package goredisstore

import (
	"context"
	"errors"
	"net"

	"github.com/allowancehq/allowance/redisstore"
	"github.com/redis/go-redis/v9"
)

// New returns a Store over a go-redis client the caller owns: the Store's
// Close does not close it. c may be a *redis.Client, a Sentinel failover
// client (redis.NewFailoverClient or a UniversalClient with MasterName) or a
// *redis.ClusterClient. Without redisstore.WithReceiptKeys, the receipt key
// shared through Redis is read (or created) by Ping or else by the first
// Charge or Refund.
func New(c redis.UniversalClient, opts ...redisstore.Option) (*redisstore.Store, error) {
	if c == nil {
		return nil, errors.New("redisstore: go-redis client is nil")
	}
	gc := &client{c: c}
	for _, src := range redisstore.Scripts() {
		gc.scripts = append(gc.scripts, redis.NewScript(src))
	}
	return redisstore.New(gc, opts...)
}

// client is a go-redis client as a redisstore.Client.
type client struct {
	c       redis.UniversalClient
	scripts []*redis.Script // by redisstore.Script
}

func (g *client) Eval(ctx context.Context, s redisstore.Script, keys, args []string) ([]int64, error) {
	a := make([]any, len(args))
	for i, v := range args {
		a[i] = v
	}
	return g.scripts[s].Run(ctx, g.c, keys, a...).Int64Slice()
}

func (g *client) EvalText(ctx context.Context, s redisstore.Script, keys, args []string) (string, error) {
	a := make([]any, len(args))
	for i, v := range args {
		a[i] = v
	}
	return g.scripts[s].Run(ctx, g.c, keys, a...).Text()
}

func (g *client) Del(ctx context.Context, keys []string) error {
	return g.c.Del(ctx, keys...).Err()
}

func (g *client) SetNXGet(ctx context.Context, key, value string) (string, error) {
	old, err := g.c.SetArgs(ctx, key, value, redis.SetArgs{Mode: "NX", Get: true}).Result()
	if errors.Is(err, redis.Nil) {
		return value, nil
	}
	return old, err
}

func (g *client) Ping(ctx context.Context) error {
	return g.c.Ping(ctx).Err()
}

// Close does nothing: the caller owns the client.
func (g *client) Close() {}

func (g *client) MayHaveApplied(err error) bool {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return false // the server answered with an error
	}
	if errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) || dialError(err) {
		return false
	}
	return true
}

// dialError reports whether err is a failure to connect: no command left.
func dialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
