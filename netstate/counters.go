package netstate

import "github.com/conntrace/conntrace_exporter/tracer"

// Counters are the cumulative counters of a label set, or what one
// connection contributes to them: the connections' counters added up in 64
// bits (tracer.Totals: a counter added there is added here), the
// connections opened, closed and failed, and the RTT samples' count.
type Counters struct {
	tracer.Totals
	// Opened, Closed and Failed count connections (0 or 1 for one).
	Opened, Closed, Failed uint64
	// RTTCount is the RTT buckets' sum.
	RTTCount uint64
}

// Add adds o into c.
func (c *Counters) Add(o *Counters) {
	c.Totals.Add(&o.Totals, o.RTTCount != 0)
	c.Opened += o.Opened
	c.Closed += o.Closed
	c.Failed += o.Failed
	c.RTTCount += o.RTTCount
}

// baseline is what a client had seen of a connection older than the client
// at its first scrape: the connection's counters then, in the kernel's
// widths, kept compact: one per connection alive at a client's first
// scrape (200,000 at the scale of BENCHMARKS.md §13, per client). A
// connection's RTT samples mostly fall in a few adjacent log2 buckets: up
// to rttInline of them, from rttLo, are kept inline; a wider histogram is
// kept whole in the client's wideRTT (wide). 64 bytes instead of 168, and
// no pointer: the collector does not scan the client's baselines
// (TestBaselineSize).
type baseline struct {
	sent, recv, rttSum uint64
	retrans, segs      uint32
	rtt                [rttInline]uint32
	rttLo              uint8

	wide, opened, closed, failed bool
}

// rttBuckets are a connection's RTT buckets whole.
type rttBuckets = [tracer.NumRTTBuckets]uint32

// rttInline is how many adjacent RTT buckets a baseline keeps inline.
const rttInline = 6

// baselineOf returns c's baseline; if it is wide, its RTT buckets are
// to be kept apart, whole (c.Monotonic.RTT.Buckets).
func baselineOf(c *tracer.ConnectionStats) baseline {
	m := &c.Monotonic
	b := baseline{sent: m.SentBytes, recv: m.RecvBytes, rttSum: m.RTT.SumMicros, retrans: m.Retransmits, segs: m.SentSegments}
	b.opened, b.closed, b.failed = c.Lifecycle()
	lo, hi := -1, -1
	for i, v := range m.RTT.Buckets {
		if v != 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	switch {
	case lo < 0: // no sample
	case hi-lo < rttInline:
		b.rttLo = uint8(lo)
		copy(b.rtt[:], m.RTT.Buckets[lo:hi+1])
	default:
		b.wide = true
	}
	return b
}

// counters returns the baseline's counters whole; wide holds its RTT
// buckets if the baseline is wide.
func (b *baseline) counters(wide *rttBuckets) tracer.Counters {
	c := tracer.Counters{SentBytes: b.sent, RecvBytes: b.recv, Retransmits: b.retrans, SentSegments: b.segs}
	c.RTT.SumMicros = b.rttSum
	if b.wide {
		c.RTT.Buckets = *wide
	} else {
		copy(c.RTT.Buckets[b.rttLo:], b.rtt[:]) // as many as fit: past hi, b.rtt is 0
	}
	return c
}

func bit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// since returns what c counted after the baseline b (the zero baseline: all
// of it). A counter below its baseline means the kernel's entry was replaced
// (a stats reset): it counts whole, and reset is true.
func since(c *tracer.ConnectionStats, b *baseline, wide *rttBuckets) (d Counters, reset bool) {
	base := b.counters(wide)
	m, reset := c.Monotonic.Sub(&base, true)
	d.Totals, d.RTTCount = m.Widen(), m.RTT.Count()
	sub := func(v, base bool) uint64 {
		if !v && base {
			reset = true
		}
		return bit(v) - min(bit(v), bit(base))
	}
	opened, closed, failed := c.Lifecycle()
	d.Opened = sub(opened, b.opened)
	d.Closed = sub(closed, b.closed)
	d.Failed = sub(failed, b.failed)
	return d, reset
}

// all returns everything c counted: since the zero baseline, without
// its subtraction (the fold of every closed connection).
func all(c *tracer.ConnectionStats) Counters {
	d := Counters{Totals: c.Monotonic.Widen(), RTTCount: c.Monotonic.RTT.Count()}
	opened, closed, failed := c.Lifecycle()
	d.Opened, d.Closed, d.Failed = bit(opened), bit(closed), bit(failed)
	return d
}

// ends returns only the connection's end: its closing or failure, without
// traffic (for a connection whose traffic predates the client).
func ends(c *tracer.ConnectionStats) Counters {
	_, closed, failed := c.Lifecycle()
	return Counters{Closed: bit(closed), Failed: bit(failed)}
}

// minus returns a − b for counters of the same connection read twice
// (b first), the lifecycle left out: the traffic between the two reads.
func minus(a, b *Counters) Counters {
	var d Counters
	d.Totals, _ = a.Totals.Sub(&b.Totals, false)
	d.RTTCount = d.RTT.Count()
	return d
}
