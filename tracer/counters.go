package tracer

// NumRTTBuckets is the number of log2 RTT buckets the kernel keeps per
// connection. Bucket i counts samples s (in µs) with 2^(i-1) < s <= 2^i;
// bucket 0 counts s <= 1µs and the last bucket everything above 2^(N-2)µs.
const NumRTTBuckets = 32

// RTTBucketUpperBoundMicros is the inclusive upper bound of bucket i in µs.
// The last bucket is unbounded (+Inf).
func RTTBucketUpperBoundMicros(i int) uint64 { return uint64(1) << uint(i) }

// Count is the width of a counter: the kernel's per connection (uint32 for
// the small ones), 64 bits where many connections add up.
type Count interface{ ~uint32 | ~uint64 }

// Histogram holds RTT samples: non-cumulative log2 buckets and the sum.
type Histogram[N Count] struct {
	Buckets   [NumRTTBuckets]N
	SumMicros uint64
}

// RTTHistogram is a connection's RTT histogram, in the kernel's widths.
type RTTHistogram = Histogram[uint32]

// Count is the number of samples in the histogram.
func (h *Histogram[N]) Count() uint64 {
	var n uint64
	for _, b := range h.Buckets {
		n += uint64(b)
	}
	return n
}

// CountersOf are the cumulative counters of a connection, or of many, in
// widths N: the one value type of the counters. Counters (the kernel's
// widths) is a record's (ConnectionStats.Monotonic), what the tracer
// reported of a connection (known) and a client's baseline (netstate);
// Totals (64 bits) is what a client's series add up (netstate.Counters).
// Adding a counter is a field here and a line in each method below; the
// record's field is read in countersOf and written in setRecordCounters
// (record.go).
type CountersOf[N Count] struct {
	SentBytes, RecvBytes uint64
	Retransmits          N
	// SentSegments counts TCP data segments sent, retransmissions
	// included (TCP_INFO's tcpi_data_segs_out): the denominator of a
	// retransmit ratio.
	SentSegments N
	// RTT holds one RTT sample per round trip (the sockops RTT callback
	// runs once per round trip, not for every sample the kernel takes;
	// before Linux 6.10 it is the smoothed RTT at that moment).
	RTT Histogram[N]
	// Detail is how losses happened and were recovered from, the resets,
	// and what limited sending.
	Detail Detail[N]
}

// Detail are a TCP connection's counters beyond bytes, retransmits and
// RTT: its losses (TCP_INFO's, and two counted from events: RTOs,
// Recoveries), its resets (from events), and what limited its sending
// (TCP_INFO's chrono stats, in jiffies: Tracer.JiffyMicros converts).
type Detail[N Count] struct {
	// RetransBytes are the bytes retransmitted (tcpi_bytes_retrans).
	RetransBytes uint64
	// RTOs are the retransmission timeouts (the sockops RTO callback: each
	// time the timer fired; not for connections found at start-up).
	RTOs N
	// Recoveries are the fast recovery entries (tcp_cong_state_set, Linux
	// 6.4+).
	Recoveries N
	// DSACKs are the D-SACKs the peer sent: segments it received twice,
	// retransmissions that were not needed (tcpi_dsack_dups).
	DSACKs N
	// Reorders are the reorderings the connection saw (tcpi_reord_seen).
	Reorders N
	// OOOPackets are the packets received out of order (tcpi_rcv_ooopack).
	OOOPackets N
	// CEMarks are the segments delivered with a CE (congestion) mark, as
	// the peer echoed them (tcpi_delivered_ce).
	CEMarks N
	// ResetsSent are the RSTs this end sent (tcp_send_reset), those of
	// its close too (close() with unread data, SO_LINGER 0);
	// ResetsReceived the RSTs it took (tcp_receive_reset: a refused
	// connect's too; and the kernel's abort of a connection that received
	// data after it was shut down for reading, which sends one).
	ResetsSent, ResetsReceived N
	// BusyJiffies is the time the connection had data in flight or
	// waiting to be sent (tcpi_busy_time), the two below included:
	// limited by the peer's receive window (tcpi_rwnd_limited), by the
	// send buffer (tcpi_sndbuf_limited). In jiffies, as the kernel keeps
	// them.
	BusyJiffies, RwndLimitedJiffies, SndbufLimitedJiffies N
}

// fields returns each counter of l, for the methods below.
func (l *Detail[N]) fields() (bytes *uint64, counts [11]*N) {
	return &l.RetransBytes, [11]*N{&l.RTOs, &l.Recoveries, &l.DSACKs, &l.Reorders, &l.OOOPackets, &l.CEMarks,
		&l.ResetsSent, &l.ResetsReceived, &l.BusyJiffies, &l.RwndLimitedJiffies, &l.SndbufLimitedJiffies}
}

// add adds o into l.
func (l *Detail[N]) add(o *Detail[N]) {
	lb, lc := l.fields()
	ob, oc := o.fields()
	*lb += *ob
	for i := range lc {
		*lc[i] += *oc[i]
	}
}

// Counters are one connection's counters, in the kernel's widths.
type Counters = CountersOf[uint32]

// Totals are counters added up over connections, in 64 bits.
type Totals = CountersOf[uint64]

// Max sets each counter of c to the larger of c's and o's: a live read
// races the kernel and may come out low, and a counter must never go down.
func (c *CountersOf[N]) Max(o *CountersOf[N]) {
	c.SentBytes = max(c.SentBytes, o.SentBytes)
	c.RecvBytes = max(c.RecvBytes, o.RecvBytes)
	c.Retransmits = max(c.Retransmits, o.Retransmits)
	c.SentSegments = max(c.SentSegments, o.SentSegments)
	for i, v := range o.RTT.Buckets {
		c.RTT.Buckets[i] = max(c.RTT.Buckets[i], v)
	}
	c.RTT.SumMicros = max(c.RTT.SumMicros, o.RTT.SumMicros)
	cb, cc := c.Detail.fields()
	ob, oc := o.Detail.fields()
	*cb = max(*cb, *ob)
	for i := range cc {
		*cc[i] = max(*cc[i], *oc[i])
	}
}

// Add adds o into c; the RTT histogram only if rtt (false: the caller
// knows o has no RTT sample, as most short connections, and the 32
// buckets' add is most of the cost).
func (c *CountersOf[N]) Add(o *CountersOf[N], rtt bool) {
	c.SentBytes += o.SentBytes
	c.RecvBytes += o.RecvBytes
	c.Retransmits += o.Retransmits
	c.SentSegments += o.SentSegments
	if o.Detail != (Detail[N]{}) {
		c.Detail.add(&o.Detail)
	}
	if rtt {
		for i, v := range o.RTT.Buckets {
			c.RTT.Buckets[i] += v
		}
		c.RTT.SumMicros += o.RTT.SumMicros
	}
}

// Sub returns c − b, per counter. A counter below b's means b was of an
// entry the kernel replaced since: if whole, it counts whole and reset
// says so; else it counts 0 (the floor).
func (c *CountersOf[N]) Sub(b *CountersOf[N], whole bool) (d CountersOf[N], reset bool) {
	sub64 := func(v, base uint64) uint64 {
		if v < base {
			reset = true
			if whole {
				return v
			}
			return 0
		}
		return v - base
	}
	sub := func(v, base N) N { return N(sub64(uint64(v), uint64(base))) }
	d.SentBytes = sub64(c.SentBytes, b.SentBytes)
	d.RecvBytes = sub64(c.RecvBytes, b.RecvBytes)
	d.Retransmits = sub(c.Retransmits, b.Retransmits)
	d.SentSegments = sub(c.SentSegments, b.SentSegments)
	for i, v := range c.RTT.Buckets {
		d.RTT.Buckets[i] = sub(v, b.RTT.Buckets[i])
	}
	d.RTT.SumMicros = sub64(c.RTT.SumMicros, b.RTT.SumMicros)
	db, dc := d.Detail.fields()
	cb, cc := c.Detail.fields()
	bb, bc := b.Detail.fields()
	*db = sub64(*cb, *bb)
	for i := range dc {
		*dc[i] = sub(*cc[i], *bc[i])
	}
	return d, reset
}

// Widen returns c in 64 bits.
func (c *CountersOf[N]) Widen() (t Totals) {
	c.WidenInto(&t)
	return t
}

// WidenInto sets t to c in 64 bits.
func (c *CountersOf[N]) WidenInto(t *Totals) {
	*t = Totals{
		SentBytes: c.SentBytes, RecvBytes: c.RecvBytes,
		Retransmits: uint64(c.Retransmits), SentSegments: uint64(c.SentSegments),
	}
	for i, v := range c.RTT.Buckets {
		t.RTT.Buckets[i] = uint64(v)
	}
	t.RTT.SumMicros = c.RTT.SumMicros
	tb, tc := t.Detail.fields()
	cb, cc := c.Detail.fields()
	*tb = *cb
	for i := range tc {
		*tc[i] = uint64(*cc[i])
	}
}
