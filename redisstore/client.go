package redisstore

import (
	"context"
	_ "embed"
	"errors"
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

// Script names one of the store's Lua scripts: an index into Scripts.
type Script int

// scriptID is the store's name for a Script.
type scriptID = Script

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

// Scripts returns the source of every script the store runs, indexed by
// Script, for a Client to load (or hash, for EVALSHA) once.
func Scripts() []string {
	src := scriptSources()
	return src[:]
}

// Client is what the store needs from a Redis client. The store does not
// import one: package rueidisstore adapts github.com/redis/rueidis and
// package goredisstore github.com/redis/go-redis, so a program builds only
// the client it uses. A Client runs the scripts by SHA (EVALSHA), falling
// back to EVAL when the server's script cache does not have them. It must
// be safe for concurrent use.
type Client interface {
	// Eval runs script s and returns its array of integers.
	Eval(ctx context.Context, s Script, keys, args []string) ([]int64, error)
	// EvalText runs script s and returns its string.
	EvalText(ctx context.Context, s Script, keys, args []string) (string, error)
	// Del deletes keys of one hash slot.
	Del(ctx context.Context, keys []string) error
	// SetNXGet sets key to value unless it is set (SET NX GET) and
	// returns the value it holds after.
	SetNXGet(ctx context.Context, key, value string) (string, error)
	// Ping checks that the server answers.
	Ping(ctx context.Context) error
	// Close is called by Store.Close: it closes the client if the Client
	// made it, and otherwise does nothing.
	Close()
	// MayHaveApplied reports whether a failed command may still have been
	// executed by the server (the request may have left): false when the
	// server answered with an error or the command was never sent.
	MayHaveApplied(err error) bool
}

// New returns a Store over c. Without WithReceiptKeys, the receipt key
// shared through Redis is read (or created) by Ping or else by the first
// Charge or Refund. Most programs call rueidisstore.Open or
// goredisstore.New instead.
func New(c Client, opts ...Option) (*Store, error) {
	if c == nil {
		return nil, errors.New("redisstore: client is nil")
	}
	return newStore(adapted{c}, opts)
}

// client is the store's view of a Client.
type client interface {
	eval(ctx context.Context, s scriptID, keys, args []string) ([]int64, error)
	evalText(ctx context.Context, s scriptID, keys, args []string) (string, error)
	del(ctx context.Context, keys []string) error
	setNXGet(ctx context.Context, key, value string) (string, error)
	ping(ctx context.Context) error
	close()
	mayHaveApplied(err error) bool
}

// adapted is a Client as the store's client.
type adapted struct{ c Client }

func (a adapted) eval(ctx context.Context, s scriptID, keys, args []string) ([]int64, error) {
	return a.c.Eval(ctx, s, keys, args)
}

func (a adapted) evalText(ctx context.Context, s scriptID, keys, args []string) (string, error) {
	return a.c.EvalText(ctx, s, keys, args)
}

func (a adapted) del(ctx context.Context, keys []string) error { return a.c.Del(ctx, keys) }

func (a adapted) setNXGet(ctx context.Context, key, value string) (string, error) {
	return a.c.SetNXGet(ctx, key, value)
}

func (a adapted) ping(ctx context.Context) error { return a.c.Ping(ctx) }
func (a adapted) close()                         { a.c.Close() }
func (a adapted) mayHaveApplied(err error) bool  { return a.c.MayHaveApplied(err) }
