package netstate

import "github.com/conntrace/conntrace_exporter/tracer"

// Counters are the cumulative counters of a label set, or what one
// connection contributes to them. Every counter of the traffic metrics is
// here, so that adding one is an edit of this type and of its three
// methods.
type Counters struct {
	Sent, Recv            uint64
	Retransmits, Segments uint64
	// Opened, Closed and Failed count connections (0 or 1 for one).
	Opened, Closed, Failed uint64
	// RTT holds the kernel's non-cumulative log2 buckets, the sum, and the
	// count (the buckets' sum: Add skips the buckets of a connection
	// without samples, most short ones).
	RTT          [tracer.NumRTTBuckets]uint64
	RTTSumMicros uint64
	RTTCount     uint64
}

// Add adds o into c.
func (c *Counters) Add(o *Counters) {
	c.Sent += o.Sent
	c.Recv += o.Recv
	c.Retransmits += o.Retransmits
	c.Segments += o.Segments
	c.Opened += o.Opened
	c.Closed += o.Closed
	c.Failed += o.Failed
	if o.RTTCount != 0 {
		for i, v := range o.RTT {
			c.RTT[i] += v
		}
		c.RTTSumMicros += o.RTTSumMicros
		c.RTTCount += o.RTTCount
	}
}

// baseline is what a client had seen of a connection older than the client
// at its first scrape: the connection's counters then, in the kernel's
// widths (half of Counters' size: one per connection alive at a client's
// first scrape).
type baseline struct {
	c                      tracer.Counters
	opened, closed, failed bool
}

func baselineOf(c *tracer.ConnectionStats) baseline {
	b := baseline{c: c.Monotonic}
	b.opened, b.closed, b.failed = c.Lifecycle()
	return b
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
func since(c *tracer.ConnectionStats, b *baseline) (d Counters, reset bool) {
	m, reset := c.Monotonic.Sub(&b.c, true)
	d.addConn(&m)
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

// addConn adds one connection's counters into c, widened.
func (c *Counters) addConn(m *tracer.Counters) {
	c.Sent += m.SentBytes
	c.Recv += m.RecvBytes
	c.Retransmits += uint64(m.Retransmits)
	c.Segments += uint64(m.SentSegments)
	for i, v := range m.RTT.Buckets {
		c.RTT[i] += uint64(v)
		c.RTTCount += uint64(v)
	}
	c.RTTSumMicros += m.RTT.SumMicros
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
	d := Counters{
		Sent: a.Sent - min(a.Sent, b.Sent), Recv: a.Recv - min(a.Recv, b.Recv),
		Retransmits:  a.Retransmits - min(a.Retransmits, b.Retransmits),
		Segments:     a.Segments - min(a.Segments, b.Segments),
		RTTSumMicros: a.RTTSumMicros - min(a.RTTSumMicros, b.RTTSumMicros),
	}
	for i := range a.RTT {
		d.RTT[i] = a.RTT[i] - min(a.RTT[i], b.RTT[i])
		d.RTTCount += d.RTT[i]
	}
	return d
}
