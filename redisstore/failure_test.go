package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/redistest"
	"github.com/allowancehq/allowance/redisstore"
	"github.com/allowancehq/allowance/redisstore/goredisstore"
	"github.com/allowancehq/allowance/redisstore/rueidisstore"
	"github.com/redis/go-redis/v9"
)

// Proxy modes: what a proxy does to the traffic of its connections.
const (
	pass        int32 = iota // forward both ways
	dropReply                // forward requests; swallow the reply and cut the connection
	dropRequest              // swallow requests and cut the connection
	stall                    // forward requests; hold replies until the mode changes
)

// proxy is a loopback TCP proxy in front of a real redis-server that can cut
// or stall connections at chosen moments: the network failures after which a
// client cannot know whether its command ran.
type proxy struct {
	ln       net.Listener
	upstream string
	mode     atomic.Int32
	// scripted is set when a script request passed in dropReply mode: only
	// replies after it are dropped, so that a reply to an earlier command
	// (a client's health check) does not cut the connection too early.
	scripted atomic.Bool
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newProxy(t *testing.T, upstream string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u, true)
		go p.pipe(u, c, false)
	}
}

// pipe copies from src to dst, applying the mode: requests flow client to
// server, replies server to client.
func (p *proxy) pipe(src, dst net.Conn, requests bool) {
	defer p.wg.Done()
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			mode := p.mode.Load()
			for !requests && mode == stall {
				time.Sleep(time.Millisecond)
				mode = p.mode.Load()
			}
			switch {
			case requests && mode == dropRequest:
				return // the deferred Closes cut both sides
			case requests && mode == dropReply && bytes.Contains(bytes.ToUpper(buf[:n]), []byte("EVAL")):
				p.scripted.Store(true)
			case !requests && mode == dropReply && p.scripted.Load():
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

type clientKind struct {
	name string
	open func(t *testing.T, addr string, opts ...redisstore.Option) *redisstore.Store
}

var clientKinds = []clientKind{
	{"rueidis", func(t *testing.T, addr string, opts ...redisstore.Option) *redisstore.Store {
		s, err := rueidisstore.Open(context.Background(), "redis://"+addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"go-redis", func(t *testing.T, addr string, opts ...redisstore.Option) *redisstore.Store {
		// go-redis retries commands after network errors by default; the
		// charge script refuses a second charge of one id, so that is safe.
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { c.Close() })
		s, err := goredisstore.New(c, opts...)
		if err != nil {
			t.Fatal(err)
		}
		// Reads the receipt key, as Open does, so that the tests' first
		// check is a check.
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

// limiter limits "submit" to 3 an hour and 10 a day. These tests count on
// the server's clock: windows of an hour or more, so that a window ending
// between two checks of a test (which would make the usage it reads drop)
// is a rare event; with 3/minute it happened in about one run in 60.
func limiter(t *testing.T, s allowance.Store, alg allowance.Algorithm) *allowance.Limiter {
	t.Helper()
	l, err := allowance.NewLimiter(s, submitRules(t, alg)...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// submitRules are the rules of limiter: "submit", 3/hour and 10/day.
func submitRules(t *testing.T, alg allowance.Algorithm) []allowance.Rule {
	t.Helper()
	ls, err := allowance.ParseLimits("3/hour; 10/day")
	if err != nil {
		t.Fatal(err)
	}
	return []allowance.Rule{{Name: "submit", Limits: ls, Algorithm: alg}}
}

func used(t *testing.T, l *allowance.Limiter, id string) int64 {
	t.Helper()
	u, err := l.Peek(context.Background(), id)
	if err != nil {
		t.Fatalf("peek: %v", err)
	}
	return u[0].Used
}

// TestUncertainReplyLost cuts the connection after Redis ran the charge
// script: the check fails with ErrUncertain, and refunding its uncertain
// receipt undoes the charge exactly once.
func TestUncertainReplyLost(t *testing.T) {
	addr := redistest.Server(t)
	for _, kind := range clientKinds {
		for _, alg := range allowance.Algorithms() {
			t.Run(kind.name+"/"+alg.String(), func(t *testing.T) {
				p := newProxy(t, addr)
				prefix := redisstore.WithPrefix(freshPrefix())
				l := limiter(t, kind.open(t, p.addr(), prefix), alg)
				direct := limiter(t, kind.open(t, addr, prefix), alg)
				ctx := context.Background()
				if _, err := l.Check(ctx, "alice"); err != nil { // warm the connection
					t.Fatal(err)
				}
				p.scripted.Store(false)
				p.mode.Store(dropReply)
				d, err := l.Check(ctx, "alice")
				p.mode.Store(pass)
				if !errors.Is(err, allowance.ErrUncertain) {
					t.Fatalf("check with the reply lost: %v; want ErrUncertain", err)
				}
				if !d.Receipt.Uncertain() {
					t.Fatal("receipt of an uncertain check is not uncertain")
				}
				if got := used(t, direct, "alice"); got != 2 {
					t.Fatalf("used %d after the lost reply; want 2 (the script ran)", got)
				}
				// The receipt travels to another process and is refunded there.
				b, err := d.Receipt.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				var r allowance.Receipt
				if err := r.UnmarshalBinary(b); err != nil {
					t.Fatal(err)
				}
				res, err := direct.Refund(ctx, &r)
				if err != nil || res.Outcome() != allowance.Restored {
					t.Fatalf("refund of the uncertain receipt: %v %v; want restored", res.Outcome(), err)
				}
				if got := used(t, direct, "alice"); got != 1 {
					t.Fatalf("used %d after the refund; want 1", got)
				}
				res, err = l.Refund(ctx, &d.Receipt)
				if err != nil || res.Outcome() != allowance.AlreadyRefunded {
					t.Fatalf("second refund: %v %v; want already_refunded", res.Outcome(), err)
				}
				if got := used(t, direct, "alice"); got != 1 {
					t.Fatalf("used %d after the second refund; want 1", got)
				}
			})
		}
	}
}

// TestUncertainRequestLost cuts the connection before the request reaches
// Redis: refunding the uncertain receipt voids its id, and the charge, should
// it arrive late, is refused.
func TestUncertainRequestLost(t *testing.T) {
	addr := redistest.Server(t)
	for _, kind := range clientKinds {
		t.Run(kind.name, func(t *testing.T) {
			p := newProxy(t, addr)
			prefix := redisstore.WithPrefix(freshPrefix())
			s := kind.open(t, p.addr(), prefix)
			direct := kind.open(t, addr, prefix)
			l := limiter(t, s, allowance.SlidingWindow)
			ctx := context.Background()
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			p.mode.Store(dropRequest)
			req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "bob", Rules: submitRules(t, allowance.SlidingWindow)}
			d, err := chargeStore(ctx, s, req)
			p.mode.Store(pass)
			if !errors.Is(err, allowance.ErrUncertain) {
				t.Fatalf("charge with the request lost: %v; want ErrUncertain", err)
			}
			u := d.Receipt // the store's uncertain receipt, signed
			if !u.Uncertain() || !u.Signed() || u.ID != req.ID {
				t.Fatalf("receipt of the uncertain charge: uncertain %v, signed %v, id %s; want an uncertain, signed receipt of %s", u.Uncertain(), u.Signed(), u.ID, req.ID)
			}
			res, err := refundStore(ctx, direct, &u, nil)
			if err != nil || res.Outcome() != allowance.NotCharged {
				t.Fatalf("refund of the lost charge: %v %v; want not_charged", res.Outcome(), err)
			}
			// The request arrives after all: it must not charge.
			if _, err := chargeStore(ctx, direct, req); !errors.Is(err, allowance.ErrVoided) {
				t.Fatalf("late charge of a voided id: %v; want ErrVoided", err)
			}
			if got := used(t, l, "bob"); got != 0 {
				t.Fatalf("used %d; want 0", got)
			}
			res, err = refundStore(ctx, direct, &u, nil)
			if err != nil || res.Outcome() != allowance.AlreadyRefunded {
				t.Fatalf("second refund: %v %v; want already_refunded", res.Outcome(), err)
			}
		})
	}
}

// TestChargeIsNotRepeated sends one charge twice, as a client that retries
// after a lost connection would: the second attempt charges nothing.
func TestChargeIsNotRepeated(t *testing.T) {
	addr := redistest.Server(t)
	s := clientKinds[0].open(t, addr, redisstore.WithPrefix(freshPrefix()))
	l := limiter(t, s, allowance.FixedWindow)
	req := allowance.Request{ID: allowance.NewReceiptID(), Identity: "carol", Rules: submitRules(t, allowance.FixedWindow)}
	ctx := context.Background()
	if d, err := chargeStore(ctx, s, req); err != nil || !d.Allowed {
		t.Fatalf("first charge: %v %v", d.Allowed, err)
	}
	if _, err := chargeStore(ctx, s, req); !errors.Is(err, allowance.ErrUncertain) {
		t.Fatalf("repeated charge: %v; want ErrUncertain", err)
	}
	if got := used(t, l, "carol"); got != 1 {
		t.Fatalf("used %d; want 1", got)
	}
}

// TestDeadline stalls Redis's replies: a check returns when its context's
// deadline passes, with an uncertain error that wraps the deadline.
func TestDeadline(t *testing.T) {
	addr := redistest.Server(t)
	for _, kind := range clientKinds {
		t.Run(kind.name, func(t *testing.T) {
			p := newProxy(t, addr)
			s := kind.open(t, p.addr(), redisstore.WithPrefix(freshPrefix()))
			l := limiter(t, s, allowance.GCRA)
			if err := s.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
			p.mode.Store(stall)
			defer p.mode.Store(pass)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			_, err := l.Check(ctx, "dave")
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, allowance.ErrUncertain) {
				t.Fatalf("check past its deadline: %v; want DeadlineExceeded and ErrUncertain", err)
			}
		})
	}
}

// TestServerDown stops Redis under a Store: checks fail with an error that
// is not uncertain (nothing was sent), and work again, with the same Store,
// once a server is back on the same port.
func TestServerDown(t *testing.T) {
	for _, kind := range clientKinds {
		t.Run(kind.name, func(t *testing.T) {
			in := redistest.Start(t)
			s := kind.open(t, in.Addr(), redisstore.WithPrefix(freshPrefix()))
			l := limiter(t, s, allowance.SlidingLog)
			ctx := context.Background()
			if _, err := l.Check(ctx, "erin"); err != nil {
				t.Fatal(err)
			}
			in.Stop()
			// The first attempts may meet the connection the server cut (EOF:
			// uncertain, the request may have left); then the client cannot
			// connect, and says so at once.
			certain := false
			for i := 0; i < 50 && !certain; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := l.Check(ctx, "erin")
				cancel()
				if err == nil {
					t.Fatal("check succeeded with the server stopped")
				}
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("check with the server stopped waited for its deadline: %v", err)
				}
				if !strings.HasPrefix(err.Error(), "redisstore: ") {
					t.Fatalf("check with the server stopped: %q is not a wrapped redisstore error", err)
				}
				certain = !errors.Is(err, allowance.ErrUncertain)
				if !certain {
					time.Sleep(20 * time.Millisecond)
				}
			}
			if !certain {
				t.Fatal("checks with the server stopped kept failing as uncertain; a refused connection is certain")
			}
			in.Restart()
			var err error
			for i := 0; i < 100; i++ {
				var d allowance.Decision
				if d, err = l.Check(ctx, "erin"); err == nil {
					if !d.Allowed {
						t.Fatal("check after the restart was denied")
					}
					break
				}
				time.Sleep(50 * time.Millisecond) // the client reconnects in the background
			}
			if err != nil {
				t.Fatalf("check after the restart: %v", err)
			}
		})
	}
}
