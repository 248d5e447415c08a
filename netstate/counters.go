package netstate

import "github.com/conntrace/conntrace_exporter/tracer"

// Counters are the cumulative counters of a label set, or what one
// connection contributes to them: the connections' counters added up in 64
// bits (tracer.Totals: a counter added there is added here), the
// connections opened, closed and failed, and the RTT samples' count.
type Counters struct {
	tracer.Totals
	// Opened, Closed and Failed count connections (0 or 1 for one);
	// Failed is the sum of Failures.
	Opened, Closed, Failed uint64
	// Failures count connects that never established, and Aborts
	// established connections that ended with an error on their socket,
	// by tracer.Reason (ConnectionStats.End).
	Failures, Aborts [tracer.NumReasons]uint64
	// Handshakes are the TCP handshakes' durations (HandshakeBounds),
	// counted with the opening; Durations the connections' lives, from
	// ESTABLISHED to CLOSE (DurationBounds), counted with the closing.
	Handshakes, Durations Timing
	// RTTCount is the RTT buckets' sum.
	RTTCount uint64
	// has says which of the sections above may hold a count: most
	// connections fail, abort or close never, and a fold or a live read
	// then adds (and copies) none of their arrays.
	has sections
}

// sections of Counters that has marks.
type sections uint8

const (
	hasReasons sections = 1 << iota // Failures, Aborts
	hasHandshakes
	hasDurations
)

// setEnd sets what ends returns into d, zero there.
func setEnd(c *tracer.ConnectionStats, d *Counters) {
	_, closed, failed := c.Lifecycle()
	d.Closed, d.Failed = bit(closed), bit(failed)
	switch {
	case failed:
		d.Failures[c.End] = 1
		d.has |= hasReasons
	case closed && c.End != tracer.ReasonNone:
		d.Aborts[c.End] = 1
		d.has |= hasReasons
	}
	timings(c, d, false, true)
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
	sub := func(v, o *uint64) {
		if *v < *o {
			reset = true
		}
		*v -= min(*v, *o)
	}
	has := c.has | o.has
	if has&hasReasons != 0 {
		for i := range c.Failures {
			sub(&c.Failures[i], &o.Failures[i])
			sub(&c.Aborts[i], &o.Aborts[i])
		}
	}
	for _, t := range [...]struct {
		bit  sections
		v, o *Timing
	}{{hasHandshakes, &c.Handshakes, &o.Handshakes}, {hasDurations, &c.Durations, &o.Durations}} {
		if has&t.bit == 0 {
			continue
		}
		for i := range t.v.Buckets {
			sub(&t.v.Buckets[i], &t.o.Buckets[i])
		}
		sub(&t.v.SumMicros, &t.o.SumMicros)
	}
	c.has = has
	return reset
}

// Add adds o into c. o's sections count only where its has says so: a
// Counters is built by all or ends, never by hand.
func (c *Counters) Add(o *Counters) {
	c.Totals.Add(&o.Totals, o.RTTCount != 0)
	c.Opened += o.Opened
	c.Closed += o.Closed
	c.Failed += o.Failed
	if o.has&hasReasons != 0 {
		for i := range c.Failures {
			c.Failures[i] += o.Failures[i]
			c.Aborts[i] += o.Aborts[i]
		}
	}
	if o.has&hasHandshakes != 0 {
		c.Handshakes.add(&o.Handshakes)
	}
	if o.has&hasDurations != 0 {
		c.Durations.add(&o.Durations)
	}
	c.has |= o.has
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
func all(c *tracer.ConnectionStats) (d Counters) {
	// Built in place (the result): a Counters is 800 bytes, and this runs
	// for every live connection at every scrape.
	setEnd(c, &d)
	c.Monotonic.WidenInto(&d.Totals)
	d.RTTCount = c.Monotonic.RTT.Count()
	opened, _, _ := c.Lifecycle()
	d.Opened = bit(opened)
	timings(c, &d, true, false)
	return d
}

// ends returns only the connection's end: its closing, failure or abort
// (by its reason) and its duration, without traffic (for a connection
// whose traffic predates the client).
func ends(c *tracer.ConnectionStats) (d Counters) {
	setEnd(c, &d)
	return d
}

// minus returns a − b for counters of the same connection read twice
// (b first), the lifecycle left out: the traffic between the two reads.
func minus(a, b *Counters) Counters {
	var d Counters
	d.Totals, _ = a.Totals.Sub(&b.Totals, false)
	d.RTTCount = d.RTT.Count()
	return d
}
