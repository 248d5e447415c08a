package tracer

import (
	"testing"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// The queue keeps every record pushed, in order, across chunks; the pool
// reuses the chunks of a queue done with, and keeps no more than the last
// queue returned used (a burst's chunks go).
func TestRecordQueueKeepsRecordsAndBoundsItsPool(t *testing.T) {
	var pool chunkPool
	var q recordQueue
	const n = 5*queueChunk + 7
	for i := range n {
		q.push(&bpf.ConntraceConnRecord{Cookie: uint64(i)}, &pool)
	}
	if q.len() != n || len(q.chunks) != 6 {
		t.Fatalf("len %d in %d chunks, want %d in 6", q.len(), len(q.chunks), n)
	}
	for i := range n {
		if got := q.at(i).Cookie; got != uint64(i) {
			t.Fatalf("record %d has cookie %d", i, got)
		}
	}
	pool.put(&q)
	if q.len() != 0 || len(pool.free) != 6 {
		t.Fatalf("after put: queue %d, pool %d chunks; want 0, 6", q.len(), len(pool.free))
	}
	// A smaller queue reuses chunks; returned, the pool shrinks to its size.
	var small recordQueue
	for i := range queueChunk + 1 {
		small.push(&bpf.ConntraceConnRecord{Cookie: uint64(i)}, &pool)
	}
	if len(pool.free) != 4 {
		t.Errorf("pool holds %d chunks after lending 2 of 6, want 4", len(pool.free))
	}
	pool.put(&small)
	if len(pool.free) != 2 {
		t.Errorf("pool holds %d chunks after a queue of 2 came back, want 2", len(pool.free))
	}
}
