package redisstore

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/internal/algo"
)

// Codes of the charge script's one-value replies.
const (
	replyVoided  = -1 // the receipt id was voided: nothing charged
	replyCharged = -2 // the id was charged before: a retried request
)

// replyRepeat starts the reply of an idempotent charge that repeats an
// earlier one: "-3 <receipt id> <costs> <that charge's reply>".
const replyRepeat = "-3 "

// replyGCRA starts the reply of an allowed check whose limits are all
// GCRA's: the server's time, then the TATs.
const replyGCRA = 3

// ints reads the integers of a script's text reply, one at a time, without
// allocating. The reply is strict: integers in decimal, a minus sign the only
// sign, one space between two and none before the first or after the last.
type ints struct {
	s string
	n int // integers read
}

// next returns the next integer, or false at the end of the reply or at
// something that is not an integer where one should be.
func (r *ints) next() (int64, bool) {
	s := r.s
	if r.n > 0 {
		if len(s) < 2 || s[0] != ' ' {
			return 0, false
		}
		s = s[1:]
	}
	end := strings.IndexByte(s, ' ')
	if end < 0 {
		end = len(s)
	}
	tok := s[:end]
	if tok == "" || tok[0] == '+' {
		return 0, false
	}
	v, err := strconv.ParseInt(tok, 10, 64)
	if err != nil {
		return 0, false
	}
	r.s = s[end:]
	r.n++
	return v, true
}

// parseCharge fills d from the charge script's reply for m limits (see
// charge.lua): "1 <per limit: remaining resetAfter> <per limit: window>"
// for an allowed check, "3 <s> <µs> <per limit: TAT>" for an allowed check of
// GCRA limits only (parseGCRA), "0 <per limit: allowed remaining resetAfter
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
			if reset < 0 || window < 0 {
				return 0, fmt.Errorf("script returned %q; expected no negative reset or window", reply)
			}
			d.SetLimit(i, true, rem, micros(reset), 0, window)
		}
		if w.s != "" {
			return 0, fmt.Errorf("script returned %q; expected %d integers", reply, 1+3*m)
		}
		d.Allow()
		return 0, nil
	case replyGCRA:
		return 0, parseGCRA(reply, r, m, d)
	case 0:
		denied := false
		for i := 0; i < m; i++ {
			a, ok1 := r.next()
			rem, ok2 := r.next()
			reset, ok3 := r.next()
			retry, ok4 := r.next()
			if !(ok1 && ok2 && ok3 && ok4) {
				return 0, fmt.Errorf("script returned %q; expected %d integers", reply, 1+4*m)
			}
			if a != 0 && a != 1 || reset < 0 || retry < 0 {
				return 0, fmt.Errorf("script returned %q; expected per limit a flag of 0 or 1 and no negative times", reply)
			}
			denied = denied || a == 0
			d.SetLimit(i, a == 1, rem, micros(reset), micros(retry), 0)
		}
		if r.s != "" {
			return 0, fmt.Errorf("script returned %q; expected %d integers", reply, 1+4*m)
		}
		if !denied {
			return 0, fmt.Errorf("script returned %q; expected a denial to name a limit that denied", reply)
		}
		return 0, nil
	}
	return 0, fmt.Errorf("script returned %q; expected 1, 3, 0 or a code first", reply)
}

// parseReply fills d from the charge script's reply to req, which has m
// limits: a repeat's (parseRepeat) or any other (parseCharge).
func parseReply(reply string, req allowance.Request, m int, d *allowance.Decision) (code int64, err error) {
	if strings.HasPrefix(reply, replyRepeat) {
		return 0, parseRepeat(reply, req, m, d)
	}
	return parseCharge(reply, m, d)
}

// parseRepeat fills d from the reply to an idempotent charge of req that
// repeats an earlier one: "-3 <receipt id> <costs> <reply>", the earlier
// charge's receipt id (32 hex digits), the costs its request set ("0", or
// the number of rules, req's, and per rule its cost, 0 for the rule's own),
// and the reply of its allowed charge (parseCharge). d becomes that
// charge's Decision, Repeated unless the id is req's own (the script run
// again by a client that lost the connection).
func parseRepeat(reply string, req allowance.Request, m int, d *allowance.Decision) error {
	rest := reply[len(replyRepeat):]
	if len(rest) < 33 || rest[32] != ' ' {
		return fmt.Errorf("script returned %q; expected a receipt id after code %s", reply, replyRepeat)
	}
	id, err := allowance.ParseReceiptID(rest[:32])
	if err != nil {
		return fmt.Errorf("script returned %q: %w", reply, err)
	}
	r := ints{s: rest[33:]}
	k, ok := r.next()
	if !ok || k != 0 && k != int64(len(req.Rules)) {
		return fmt.Errorf("script returned %q; expected 0 or %d costs after the receipt id", reply, len(req.Rules))
	}
	var costs []int64
	if k > 0 {
		costs = make([]int64, k)
		for i := range costs {
			c, ok := r.next()
			if !ok || c < 0 {
				return fmt.Errorf("script returned %q; expected %d costs of 0 or more", reply, k)
			}
			costs[i] = c
		}
	}
	if len(r.s) < 2 || r.s[0] != ' ' {
		return fmt.Errorf("script returned %q; expected the first charge's reply after the costs", reply)
	}
	first := req
	first.ID, first.Cost, first.Costs = id, 0, costs
	d.Reset(first)
	code, err := parseCharge(r.s[1:], m, d)
	if err == nil && (code != 0 || !d.Allowed) {
		err = fmt.Errorf("script returned %q; expected an allowed charge's reply after the costs", reply)
	}
	if err != nil {
		d.Reset(req)
		return err
	}
	d.Repeated = id != req.ID
	return nil
}

// parseGCRA fills d from the rest of an allowed check's reply whose limits,
// the rules of d's receipt, are all GCRA's: "<s> <µs> <per limit: TAT>", the
// time now being s seconds and µs microseconds (the server's TIME; a test
// clock's time comes as 0 seconds and its microseconds). Each
// limit's remaining and resetAfter are computed here as the script computes
// them (internal/algo.GCRA.Charge): resetAfter = TAT - now, and remaining =
// floor((n*T - resetAfter) / T) for the emission interval T, which a TAT
// the limit allowed keeps between 0 and n.
func parseGCRA(reply string, r ints, m int, d *allowance.Decision) error {
	sec, ok1 := r.next()
	us, ok2 := r.next()
	if !ok1 || !ok2 || sec < 0 || us < 0 || sec > (math.MaxInt64-us)/1e6 {
		return fmt.Errorf("script returned %q; expected the time as seconds and microseconds after code %d", reply, replyGCRA)
	}
	now := sec*1e6 + us
	i := 0
	for _, rule := range d.Receipt.Rules() {
		if rule.Algorithm != allowance.GCRA {
			return fmt.Errorf("script returned %q; code %d is for GCRA limits only, and rule %q is %s", reply, replyGCRA, rule.Name, rule.Algorithm)
		}
		for _, l := range rule.Limits {
			tat, ok := r.next()
			if !ok {
				return fmt.Errorf("script returned %q; expected %d integers", reply, 3+m)
			}
			t := algo.EmissionInterval(l.Count, l.Period.Microseconds())
			tau := l.Count * t
			reset := tat - now
			if reset < 0 || reset > tau {
				return fmt.Errorf("script returned %q; expected TATs from now to now+%d", reply, tau)
			}
			d.SetLimit(i, true, (tau-reset)/t, micros(reset), 0, tat)
			i++
		}
	}
	if i != m || r.s != "" {
		return fmt.Errorf("script returned %q; expected %d integers for %d limits", reply, 3+m, m)
	}
	d.Allow()
	return nil
}

// parseRefund fills out, one outcome per charge, from the refund script's
// reply for charges (see refund.lua): "<per charge: outcome restored>". The
// reply is refused unless every outcome is one of allowance.Outcome's, the
// units restored are 0 unless the charge was restored and never more than
// it charged, and AlreadyRefunded and NotCharged, which say what happened to
// the whole receipt, are every charge's outcome when they are any one's.
func parseRefund(reply string, charges []allowance.Charge, out []allowance.ChargeOutcome) error {
	m := len(charges)
	r := ints{s: reply}
	var whole allowance.Outcome
	for i, c := range charges {
		o, ok1 := r.next()
		u, ok2 := r.next()
		if !(ok1 && ok2) {
			return fmt.Errorf("script returned %q; expected %d integers", reply, 2*m)
		}
		if o < int64(allowance.Restored) || o > int64(allowance.NotCharged) {
			return fmt.Errorf("script returned %q; expected outcomes from %d to %d", reply, allowance.Restored, allowance.NotCharged)
		}
		oc := allowance.Outcome(o)
		if u < 0 || u > c.Amount || u > 0 && oc != allowance.Restored {
			return fmt.Errorf("script returned %q; expected units restored from 0 to the amount charged, and only by a restored charge", reply)
		}
		if oc == allowance.AlreadyRefunded || oc == allowance.NotCharged {
			if i > 0 && whole != oc {
				return fmt.Errorf("script returned %q; expected outcome %d for every charge or none", reply, o)
			}
			whole = oc
		} else if whole != 0 {
			return fmt.Errorf("script returned %q; expected outcome %d for every charge or none", reply, whole)
		}
		out[i] = allowance.ChargeOutcome{Charge: c, Outcome: oc, Restored: u}
	}
	if r.s != "" {
		return fmt.Errorf("script returned %q; expected %d integers", reply, 2*m)
	}
	return nil
}
