package memstore

import (
	"testing"
	"unsafe"

	"github.com/allowancehq/allowance/memstore/internal/idtable"
)

// TestIdentitySlots: an identity keeps its first slots inside it, and
// room for more when it is made with more.
func TestIdentitySlots(t *testing.T) {
	var tb idtable.Table[limits]
	one, three := insertIdentity(&tb, 1, "a", 1), insertIdentity(&tb, 2, "b", 3)
	if cap(three.V.slots) != 3 || cap(one.V.slots) != len(one.V.buf) {
		t.Fatal("slot capacity")
	}
}

// TestShardSize: a shard fills two cache lines, so that shards do not share
// one and contend for it, and its lock and clock are on the first alone.
func TestShardSize(t *testing.T) {
	if n := unsafe.Sizeof(shard{}); n != 2*cacheLine {
		t.Fatalf("a shard is %d bytes, want %d", n, 2*cacheLine)
	}
	if o := unsafe.Offsetof(shard{}.ids); o != cacheLine {
		t.Fatalf("a shard's tables start at byte %d, want %d", o, cacheLine)
	}
}
