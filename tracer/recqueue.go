package tracer

import "github.com/conntrace/conntrace_exporter/bpf"

// recordQueue holds closed-connection records (natWait) in fixed chunks,
// so that an append never copies what is held. natWait used to be one
// slice: at a few thousand closes a second, its growth (a copy of the whole
// into fresh pages, each one faulted in) and the garbage it left were about
// half of the exporter's CPU (BENCHMARKS.md §12). Records are pointer-free:
// the garbage collector does not scan the chunks.
type recordQueue struct {
	chunks [][]bpf.ConntraceConnRecord
	n      int
}

// queueChunk records are at most 64 KiB.
const queueChunk = (64 << 10) / recordSize

func (q *recordQueue) len() int { return q.n }

// at returns the i-th record, 0 <= i < len().
func (q *recordQueue) at(i int) *bpf.ConntraceConnRecord {
	return &q.chunks[i/queueChunk][i%queueChunk]
}

// push appends a copy of r, with a chunk from free when the last is full.
func (q *recordQueue) push(r *bpf.ConntraceConnRecord, free *chunkPool) {
	if q.n%queueChunk == 0 {
		q.chunks = append(q.chunks, free.get())
	}
	last := len(q.chunks) - 1
	q.chunks[last] = append(q.chunks[last], *r)
	q.n++
}

// chunkPool keeps the chunks of the queues taken and done with, for the
// next records: at most as many as the last queue returned used, so that
// what a burst took goes at the next return of a smaller queue.
type chunkPool struct {
	free [][]bpf.ConntraceConnRecord
}

func (p *chunkPool) get() []bpf.ConntraceConnRecord {
	if n := len(p.free); n > 0 {
		c := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		return c[:0]
	}
	return make([]bpf.ConntraceConnRecord, 0, queueChunk)
}

// put takes back q's chunks and empties q.
func (p *chunkPool) put(q *recordQueue) {
	keep := len(q.chunks)
	p.free = append(p.free, q.chunks...)
	if len(p.free) > keep {
		clear(p.free[keep:])
		p.free = p.free[:keep]
	}
	*q = recordQueue{}
}
