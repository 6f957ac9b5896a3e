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
