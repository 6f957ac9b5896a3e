package redisstore

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/allowancehq/allowance"
)

// Codes of the charge script's one-value replies.
const (
	replyVoided  = -1 // the receipt id was voided: nothing charged
	replyCharged = -2 // the id was charged before: a retried request
)

// ints reads the space-separated integers of a script's text reply, one at a
// time, without allocating.
type ints struct {
	s string
	n int // integers read
}

// next returns the next integer, or false at the end of the reply or at
// something that is not an integer.
func (r *ints) next() (int64, bool) {
	s := strings.TrimLeft(r.s, " ")
	if s == "" {
		return 0, false
	}
	end := strings.IndexByte(s, ' ')
	if end < 0 {
		end = len(s)
	}
	v, err := strconv.ParseInt(s[:end], 10, 64)
	if err != nil {
		return 0, false
	}
	r.s = s[end:]
	r.n++
	return v, true
}

// parseCharge fills d from the charge script's reply for m limits (see
// charge.lua): "<allowed> <per limit: allowed remaining resetAfter
// retryAfter> [<per limit: window>, when allowed]", or one of the codes
// replyVoided and replyCharged, which it returns with d untouched.
func parseCharge(reply string, m int, d *allowance.Decision) (code int64, err error) {
	r := ints{s: reply}
	allowed, ok := r.next()
	if !ok {
		return 0, fmt.Errorf("script returned %q; expected integers", reply)
	}
	if allowed == replyVoided || allowed == replyCharged {
		if r.s != "" {
			return 0, fmt.Errorf("script returned %q; expected one value with code %d", reply, allowed)
		}
		return allowed, nil
	}
	// The windows follow the per-limit verdicts when the check was allowed.
	want := 1 + 4*m
	w := r
	if allowed == 1 {
		want += m
		for i := 0; i < 4*m; i++ {
			if _, ok := w.next(); !ok {
				break
			}
		}
	}
	for i := 0; i < m; i++ {
		a, ok1 := r.next()
		rem, ok2 := r.next()
		reset, ok3 := r.next()
		retry, ok4 := r.next()
		var window int64
		ok5 := true
		if allowed == 1 {
			window, ok5 = w.next()
		}
		if !(ok1 && ok2 && ok3 && ok4 && ok5) {
			return 0, fmt.Errorf("script returned %q; expected %d integers", reply, want)
		}
		d.SetLimit(i, a == 1, rem, micros(reset), micros(retry), window)
	}
	if allowed == 1 {
		r = w
	}
	if strings.TrimLeft(r.s, " ") != "" {
		return 0, fmt.Errorf("script returned %q; expected %d integers", reply, want)
	}
	if allowed == 1 {
		d.Allow()
	}
	return 0, nil
}
