// Package rueidisstore opens a redisstore.Store over a
// github.com/redis/rueidis client, whose automatic pipelining of
// concurrent commands is what makes a shared Redis fast under load. It is
// the client this library recommends; package goredisstore is the other.
// A program imports the one it uses and builds only that client.
//
//	store, err := rueidisstore.Open(ctx, "redis://127.0.0.1:6379/0")
package rueidisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/allowancehq/allowance/redisstore"
	"github.com/redis/rueidis"
)

// Open connects to the Redis at url with a rueidis client and checks that it
// answers. url is "redis://[user:password@]host:port[/db]" ("rediss://" for
// TLS; rueidis also reads options such as "?dial_timeout=1s"). With
// "?master_set=name" the address is a Sentinel's, and the store uses the
// primary it names, following failovers. Without
// redisstore.WithReceiptKeys, Open reads (or creates) the receipt key shared
// through Redis (see Store.Ping). The Store's Close closes the client.
func Open(ctx context.Context, url string, opts ...redisstore.Option) (*redisstore.Store, error) {
	o, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisstore: open: url: %w", err)
	}
	return open(ctx, o, opts)
}

// OpenCluster connects to the Redis Cluster that addrs ("host:port") belong
// to with a rueidis cluster client and checks that it answers. The Store's
// Close closes the client.
func OpenCluster(ctx context.Context, addrs []string, opts ...redisstore.Option) (*redisstore.Store, error) {
	if len(addrs) == 0 {
		return nil, errors.New("redisstore: open cluster: no addresses; expected at least one host:port")
	}
	return open(ctx, rueidis.ClientOption{InitAddress: addrs}, opts)
}

func open(ctx context.Context, o rueidis.ClientOption, opts []redisstore.Option) (*redisstore.Store, error) {
	o.DisableCache = true // no client-side caching: every read is in a script
	c, err := rueidis.NewClient(o)
	if err != nil {
		return nil, fmt.Errorf("redisstore: connect to %s: %w", strings.Join(o.InitAddress, ","), err)
	}
	s, err := redisstore.New(newClient(c, true), opts...)
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := s.Ping(ctx); err != nil { // reads the receipt key too
		c.Close()
		return nil, err
	}
	return s, nil
}

// New returns a Store over a rueidis client the caller owns: the Store's
// Close does not close it. Any rueidis client works: single node, Sentinel
// (ClientOption.Sentinel) or Cluster. Without redisstore.WithReceiptKeys,
// the receipt key shared through Redis is read (or created) by Ping or else
// by the first Charge or Refund.
func New(c rueidis.Client, opts ...redisstore.Option) (*redisstore.Store, error) {
	if c == nil {
		return nil, errors.New("redisstore: rueidis client is nil")
	}
	return redisstore.New(newClient(c, false), opts...)
}

// client is a rueidis client as a redisstore.Client.
type client struct {
	c       rueidis.Client
	scripts []*rueidis.Lua // by redisstore.Script
	owned   bool
}

func newClient(c rueidis.Client, owned bool) *client {
	rc := &client{c: c, owned: owned}
	for _, src := range redisstore.Scripts() {
		rc.scripts = append(rc.scripts, rueidis.NewLuaScript(src))
	}
	return rc
}

func (r *client) Eval(ctx context.Context, s redisstore.Script, keys, args []string) ([]int64, error) {
	return r.scripts[s].Exec(ctx, r.c, keys, args).AsIntSlice()
}

func (r *client) EvalText(ctx context.Context, s redisstore.Script, keys, args []string) (string, error) {
	return r.scripts[s].Exec(ctx, r.c, keys, args).ToString()
}

func (r *client) Del(ctx context.Context, keys []string) error {
	return r.c.Do(ctx, r.c.B().Del().Key(keys...).Build()).Error()
}

func (r *client) SetNXGet(ctx context.Context, key, value string) (string, error) {
	old, err := r.c.Do(ctx, r.c.B().Set().Key(key).Value(value).Nx().Get().Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return value, nil
	}
	return old, err
}

func (r *client) Ping(ctx context.Context) error {
	return r.c.Do(ctx, r.c.B().Ping().Build()).Error()
}

func (r *client) Close() {
	if r.owned {
		r.c.Close()
	}
}

func (r *client) MayHaveApplied(err error) bool {
	if _, ok := rueidis.IsRedisErr(err); ok {
		return false // the server answered with an error
	}
	if errors.Is(err, rueidis.ErrClosing) || dialError(err) {
		return false
	}
	return true
}

// dialError reports whether err is a failure to connect: no command left.
func dialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
