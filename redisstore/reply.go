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
// charge.lua): "1 <per limit: remaining resetAfter> <per limit: window>"
// for an allowed check, "0 <per limit: allowed remaining resetAfter
// retryAfter>" for a denied one, or one of the codes replyVoided and
// replyCharged, which it returns with d untouched.
func parseCharge(reply string, m int, d *allowance.Decision) (code int64, err error) {
	r := ints{s: reply}
	allowed, ok := r.next()
	if !ok {
		return 0, fmt.Errorf("script returned %q; expected integers", reply)
	}
	switch allowed {
	case replyVoided, replyCharged:
		if r.s != "" {
			return 0, fmt.Errorf("script returned %q; expected one value with code %d", reply, allowed)
		}
		return allowed, nil
	case 1:
		// The windows follow every limit's remaining and resetAfter.
		w := r
		for i := 0; i < 2*m; i++ {
			if _, ok := w.next(); !ok {
				break
			}
		}
		for i := 0; i < m; i++ {
			rem, ok1 := r.next()
			reset, ok2 := r.next()
			window, ok3 := w.next()
			if !(ok1 && ok2 && ok3) {
				return 0, fmt.Errorf("script returned %q; expected %d integers", reply, 1+3*m)
			}
			d.SetLimit(i, true, rem, micros(reset), 0, window)
		}
		if strings.TrimLeft(w.s, " ") != "" {
			return 0, fmt.Errorf("script returned %q; expected %d integers", reply, 1+3*m)
		}
		d.Allow()
		return 0, nil
	case 0:
		for i := 0; i < m; i++ {
			a, ok1 := r.next()
			rem, ok2 := r.next()
			reset, ok3 := r.next()
			retry, ok4 := r.next()
			if !(ok1 && ok2 && ok3 && ok4) {
				return 0, fmt.Errorf("script returned %q; expected %d integers", reply, 1+4*m)
			}
			d.SetLimit(i, a == 1, rem, micros(reset), micros(retry), 0)
		}
		if strings.TrimLeft(r.s, " ") != "" {
			return 0, fmt.Errorf("script returned %q; expected %d integers", reply, 1+4*m)
		}
		return 0, nil
	}
	return 0, fmt.Errorf("script returned %q; expected 1, 0 or a code first", reply)
}
