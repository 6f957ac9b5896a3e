// Package allowance rate-limits requests and gives a charge back when the
// server, not the caller, is why a request could not be served.
//
// A [Rule] names one or more [Limit]s ("3/minute; 20/day") and an [Algorithm].
// A [Limiter] charges an identity against its rules in one atomic step of a
// [Store], all limits or none, and returns a [Decision]. An allowed Decision
// carries a [Receipt]: exactly what was charged, where. [Limiter.Refund] gives
// it back at most once, however often and from wherever it is called; the
// receipt encodes to bytes, so a task can carry it and be refunded later by
// another process.
//
// The typical use is an API that answers 409 Conflict when a user submits a
// task while one of theirs is still running: the request was charged on
// arrival, and the handler refunds the receipt before it writes the 409, so
// the user loses no attempt.
//
// A request costs its rule's Cost, 1 by default. When requests differ in
// size (bytes, rows, tokens), [Limiter.CheckN] charges one its own cost, and
// [Limiter.CheckWith] one cost per rule; a refund gives back exactly what
// was charged. [CheckOptions] also carries an idempotency key: a request
// retried after a timeout or a lost response is charged once.
//
// [Limiter.Check] and [Limiter.Refund] return their results by value;
// [Limiter.CheckInto] and [Limiter.RefundInto] fill a caller's, so that a
// server that keeps them in a request's state copies nothing (and, over
// memstore, allocates nothing).
//
// Stores: package memstore keeps usage in process, package redisstore in Redis
// or a Redis Cluster. Package httplimit is net/http middleware built on this
// package.
package allowance
