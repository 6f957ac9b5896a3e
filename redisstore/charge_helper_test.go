package redisstore_test

import (
	"context"

	"github.com/allowancehq/allowance"
)

// chargeStore calls store.Charge with a Decision of its own and returns it.
func chargeStore(ctx context.Context, store allowance.Store, req allowance.Request) (allowance.Decision, error) {
	var d allowance.Decision
	err := store.Charge(ctx, req, &d)
	return d, err
}

// refundStore calls store.Refund with a result of its own and returns it.
func refundStore(ctx context.Context, store allowance.Store, r *allowance.Receipt, guards []allowance.Guard) (allowance.RefundResult, error) {
	var res allowance.RefundResult
	err := store.Refund(ctx, r, guards, &res)
	return res, err
}
