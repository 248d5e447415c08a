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

// sub subtracts o from c, each counter floored at 0; reset says one was
// below o's.
func (c *Counters) sub(o *Counters) (reset bool) {
	var r bool
	c.Totals, r = c.Totals.Sub(&o.Totals, false)
	reset = r
	for _, p := range [...]struct{ v, o *uint64 }{{&c.Opened, &o.Opened}, {&c.Closed, &o.Closed}, {&c.Failed, &o.Failed}, {&c.RTTCount, &o.RTTCount}} {
		if *p.v < *p.o {
			reset = true
		}
		*p.v -= min(*p.v, *p.o)
	}
	return reset
}

// Add adds o into c.
func (c *Counters) Add(o *Counters) {
	c.Totals.Add(&o.Totals, o.RTTCount != 0)
	c.Opened += o.Opened
	c.Closed += o.Closed
	c.Failed += o.Failed
	c.RTTCount += o.RTTCount
}

func bit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
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
