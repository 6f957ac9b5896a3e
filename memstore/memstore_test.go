package memstore_test

import (
	"testing"

	"github.com/allowancehq/allowance"
	"github.com/allowancehq/allowance/memstore"
	"github.com/allowancehq/allowance/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c *storetest.Clock) allowance.Store {
		s := memstore.New(memstore.WithClock(c.Now))
		t.Cleanup(func() { s.Close() })
		return s
	}, storetest.Options{})
}
