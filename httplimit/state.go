package httplimit

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/allowancehq/allowance"
)

// stateKey finds a request's state in its context.
type stateKey struct{}

// state is one limited request: its decision, its response writer and its
// refund. It is also the request's context (the parent's, plus Value for
// stateKey), and holds the request the handler gets (the caller's, with
// this context), so that a request costs one allocation for all of it.
type state struct {
	context.Context
	m     *Middleware
	set   *ruleSet
	d     allowance.Decision
	w     respWriter
	req   http.Request // the handler's request, whose Context is the state
	hv    [3]string    // backing store of the dynamic header values
	call  callCtx      // the check's context
	costs [4]int64     // the request's costs per rule (Rule.Cost), when it has them

	mu       sync.Mutex // guards the fields below and the headers once the handler runs
	wrote    bool       // the status was written, or the handler returned: hands off the headers
	refunded bool
}

// Value returns the state for stateKey and otherwise asks the parent.
func (st *state) Value(k any) any {
	if _, ok := k.(stateKey); ok {
		return st
	}
	return st.Context.Value(k)
}

func stateFrom(ctx context.Context) *state {
	st, _ := ctx.Value(stateKey{}).(*state)
	return st
}

// serve runs next with the handler's ResponseWriter and request: w and r
// with the state as their context.
func (st *state) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	st.w.ResponseWriter, st.w.st = w, st
	// WithContext is inlined and its copy does not escape: the request is
	// copied into the state instead of a new allocation of its own.
	st.req = *r.WithContext(st)
	returned := false
	defer func() {
		if !returned {
			st.aborted()
		}
	}()
	next.ServeHTTP(&st.w, &st.req)
	returned = true
	st.done()
}

// done marks the end of the handler: the server now owns the headers, so a
// refund from a goroutine that outlives the request leaves them alone. A
// charge whose outcome is unknown (the request was served unlimited under
// fail open) is voided now: such a request costs nothing. Only the
// handler's goroutine sets wrote, so it may read it unlocked; when the
// handler wrote its status, there is nothing left to do.
func (st *state) done() {
	if st.d.Receipt.Uncertain() {
		st.settle("served unlimited (fail open)")
	}
	if st.wrote {
		return
	}
	st.mu.Lock()
	st.wrote = true
	st.mu.Unlock()
}

// aborted ends a handler that panicked: the server produced no response,
// so the charge is given back.
func (st *state) aborted() {
	st.mu.Lock()
	st.wrote = true
	st.mu.Unlock()
	st.settle("handler panicked")
}

// settle hands the request's charge to the settlement queue, once, without
// the refund guards (the server, not the client, failed): as a void when
// its outcome is unknown, else as a refund.
func (st *state) settle(reason string) {
	st.mu.Lock()
	if st.refunded || st.d.Receipt.Len() == 0 {
		st.mu.Unlock()
		return
	}
	st.refunded = true
	e := &settlement{r: st.d.Receipt, kind: kindRefund, reason: reason, since: time.Now()}
	if e.r.Uncertain() {
		e.kind = kindVoid
	}
	st.mu.Unlock()
	st.m.settle.add(e)
}

// Header names, in canonical form so they go straight into the map.
const (
	hPolicy    = "Ratelimit-Policy"
	hRateLimit = "Ratelimit"
	hLimit     = "X-Ratelimit-Limit"
	hRemaining = "X-Ratelimit-Remaining"
	hReset     = "X-Ratelimit-Reset"
)

// ceilSeconds rounds d up to whole seconds, never below zero.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// setHeaders writes the rate-limit headers of the request's decision to h.
// after, when not nil, is every limit's usage after a refund (Peek, in the
// order of the Decision's limits): the headers then show it, and the most
// restrictive limit is chosen anew. It allocates one string for all the
// values that change per request: the RateLimit value, in which
// X-RateLimit-Remaining and X-RateLimit-Reset are the r and t of the most
// restrictive limit's item, so each number is formatted once.
func (st *state) setHeaders(h http.Header, after []allowance.Usage) {
	set, d := st.set, &st.d
	most := d.MostRestrictive()
	if most < 0 {
		return
	}
	if after != nil && len(after) != d.Len() {
		after = nil
	}
	var buf [256]byte
	b := buf[:0]
	var mostRem int64
	var mostReset time.Duration
	var r0, r1, t0, t1 int // where the most restrictive item's r and t are in b
	for i, u := range after {
		if i == 0 || u.Remaining < mostRem || u.Remaining == mostRem && u.ResetAfter > mostReset {
			most, mostRem, mostReset = i, u.Remaining, u.ResetAfter
		}
	}
	for i := range d.Len() {
		var rem int64
		var reset time.Duration
		if after != nil {
			rem, reset = after[i].Remaining, after[i].ResetAfter
		} else {
			s := d.State(i)
			rem, reset = s.Remaining, s.ResetAfter
		}
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, set.items[i]...)
		b = append(b, ";r="...)
		r := len(b)
		b = strconv.AppendInt(b, rem, 10)
		b = append(b, ";t="...)
		t := len(b)
		b = strconv.AppendInt(b, ceilSeconds(reset), 10)
		if i == most {
			r0, r1, t0, t1 = r, t-len(";t="), t, len(b)
		}
	}
	v := string(b)
	st.hv = [3]string{v, v[r0:r1], v[t0:t1]}
	h[hPolicy] = set.policy
	h[hRateLimit] = st.hv[0:1:1]
	h[hLimit] = set.limit[most]
	h[hRemaining] = st.hv[1:2:2]
	h[hReset] = st.hv[2:3:3]
}

// respWriter is the handler's ResponseWriter: it refunds on the rules'
// RefundOn statuses before the status goes out. Unwrap gives the wrapped
// writer to http.ResponseController (hijack, deadlines, full duplex).
type respWriter struct {
	http.ResponseWriter
	st *state
}

// WriteHeader refunds the request when code is one of its RefundOn
// statuses, then writes code. Informational (1xx) statuses pass through.
func (w *respWriter) WriteHeader(code int) {
	st := w.st
	if code >= 200 && !st.wrote {
		if st.set.refundOn.has(code) && st.d.Receipt.Len() > 0 {
			st.refund(context.WithoutCancel(st), "status "+strconv.Itoa(code), true) //nolint:errcheck // logged and counted by refund
		}
		st.mu.Lock()
		st.wrote = true
		st.mu.Unlock()
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write writes the status 200 first when the handler has not written one.
func (w *respWriter) Write(b []byte) (int, error) {
	if !w.st.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// FlushError flushes the wrapped writer, writing the status 200 first when
// the handler has not written one. http.ResponseController.Flush calls it.
func (w *respWriter) FlushError() error {
	if !w.st.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError for code that asserts http.Flusher; errors are lost.
func (w *respWriter) Flush() { _ = w.FlushError() }

// ReadFrom lets io.Copy reach the wrapped writer's io.ReaderFrom (sendfile
// for files), writing the status 200 first when the handler has not written
// one.
func (w *respWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.st.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w.ResponseWriter}, src)
}

// writerOnly hides every method but Write, so io.Copy does not come back to
// ReadFrom.
type writerOnly struct{ io.Writer }

// Unwrap returns the wrapped ResponseWriter.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
