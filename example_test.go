package allowance_test

import (
	"context"
	"fmt"
	"time"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore"
)

// A rule charges every request; a denied request charges nothing.
func ExampleLimiter_Check() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	limits, _ := allowance.ParseLimits("3/minute; 20/day")
	lim, err := allowance.NewLimiter(store, allowance.Rule{Name: "create-task", Limits: limits, Algorithm: allowance.SlidingWindow})
	if err != nil {
		panic(err)
	}
	for i := 0; i < 4; i++ {
		d, _ := lim.Check(ctx, "alice")
		fmt.Println(d.Allowed, d.Remaining)
	}
	// Output:
	// true 2
	// true 1
	// true 0
	// false 0
}

// The motivating case: the handler finds the user already has an active task
// and answers 409 Conflict, so it gives the attempt back.
func ExampleLimiter_Refund() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	lim, _ := allowance.NewLimiter(store, allowance.Rule{Name: "create-task", Limits: allowance.Limits{{Count: 5, Period: time.Minute}}})

	d, _ := lim.Check(ctx, "alice")
	fmt.Println("after the charge:", d.Remaining)

	res, _ := lim.Refund(ctx, &d.Receipt) // 409: not the caller's fault
	fmt.Println("refund:", res.Outcome())
	res, _ = lim.Refund(ctx, &d.Receipt) // a retry changes nothing
	fmt.Println("again:", res.Outcome())

	u, _ := lim.Peek(ctx, "alice")
	fmt.Println("used:", u[0].Used, "remaining:", u[0].Remaining)
	// Output:
	// after the charge: 4
	// refund: restored
	// again: already_refunded
	// used: 0 remaining: 5
}

// A server that keeps per-request state fills a Decision and a refund result
// in it, so that neither is copied nor allocated per request.
func ExampleLimiter_CheckInto() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	lim, _ := allowance.NewLimiter(store, allowance.Rule{Name: "create-task", Limits: allowance.Limits{{Count: 5, Period: time.Minute}}})

	type requestState struct {
		decision allowance.Decision
		refund   allowance.RefundResult
	}
	st := new(requestState) // in a server: pooled, or part of the request's state
	for _, conflict := range []bool{true, false} {
		if err := lim.CheckInto(ctx, "alice", &st.decision); err != nil || !st.decision.Allowed {
			continue
		}
		if conflict { // 409: give the attempt back
			_ = lim.RefundInto(ctx, &st.decision.Receipt, &st.refund)
			fmt.Println("refund:", st.refund.Outcome())
		}
		fmt.Println("remaining after the check:", st.decision.Remaining)
	}
	u, _ := lim.Peek(ctx, "alice")
	fmt.Println("used:", u[0].Used)
	// Output:
	// refund: restored
	// remaining after the check: 4
	// remaining after the check: 4
	// used: 1
}

// A receipt encodes to bytes, so a task can carry it and another process can
// refund it later.
func ExampleReceipt_MarshalBinary() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	lim, _ := allowance.NewLimiter(store, allowance.Rule{Name: "create-task", Limits: allowance.Limits{{Count: 5, Period: time.Minute}}})
	d, _ := lim.Check(ctx, "alice")

	b, _ := d.Receipt.MarshalBinary()
	var r allowance.Receipt
	if err := r.UnmarshalBinary(b); err != nil {
		panic(err)
	}
	c := r.Charge(0)
	fmt.Println(r.Identity, c.Rule, c.Limit, c.Amount, r.ID == d.Receipt.ID)
	res, _ := lim.Refund(ctx, &r)
	fmt.Println(res.Outcome())
	// Output:
	// alice create-task 5/minute 1 true
	// restored
}

func ExampleParseLimits() {
	ls, err := allowance.ParseLimits("5 per 30 seconds, 100/day")
	fmt.Println(ls, err)
	_, err = allowance.ParseLimits("10/fortnight")
	fmt.Println(err)
	// Output:
	// 5/30 seconds; 100/day <nil>
	// limit "10/fortnight": unknown time unit "fortnight"; expected second, minute, hour, day, month or year (or s, m, min, h, d)
}

// Requests of different sizes: each is charged its own cost, and a refund
// gives that cost back. A cost no request could pass is an error.
func ExampleLimiter_CheckN() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	limits, _ := allowance.ParseLimits("1000/minute")
	lim, _ := allowance.NewLimiter(store, allowance.Rule{Name: "rows", Limits: limits})

	d, _ := lim.CheckN(ctx, "alice", 600)
	fmt.Println(d.Allowed, d.Remaining)
	denied, _ := lim.CheckN(ctx, "alice", 500)
	fmt.Println(denied.Allowed, denied.Remaining)

	// The export of the 600 rows failed on the server's side: give them back.
	_, _ = lim.Refund(ctx, &d.Receipt)
	again, _ := lim.CheckN(ctx, "alice", 500)
	fmt.Println(again.Allowed, again.Remaining)

	_, err := lim.CheckN(ctx, "alice", 5000)
	fmt.Println(err)
	// Output:
	// true 400
	// false 400
	// true 500
	// check: invalid cost: cost 5000 for rule "rows" exceeds its limit "1000/minute": no request of this cost could ever pass
}
