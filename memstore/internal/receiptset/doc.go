// Package receiptset holds memstore's records of refunded and voided
// receipts: Set, an open-addressing table of receipt ids, each kept until
// an expiry, and Own, a bitmap table of the ids a shard chose itself
// (which count up), 64 to an entry, with the latest entry kept in front.
// They exist for the refund path's speed, which their benchmarks measure
// against a Go map: go test -bench . ./memstore/internal/receiptset.
//
// Neither is safe for concurrent use: memstore holds a shard's lock.
package receiptset
