package tracer

// NumRTTBuckets is the number of log2 RTT buckets the kernel keeps per
// connection. Bucket i counts samples s (in µs) with 2^(i-1) < s <= 2^i;
// bucket 0 counts s <= 1µs and the last bucket everything above 2^(N-2)µs.
const NumRTTBuckets = 32

// RTTBucketUpperBoundMicros is the inclusive upper bound of bucket i in µs.
// The last bucket is unbounded (+Inf).
func RTTBucketUpperBoundMicros(i int) uint64 { return uint64(1) << uint(i) }

// RTTHistogram holds RTT samples: non-cumulative log2 buckets and the sum.
type RTTHistogram struct {
	Buckets   [NumRTTBuckets]uint32
	SumMicros uint64
}

// Count is the number of samples in the histogram.
func (h *RTTHistogram) Count() uint64 {
	var n uint64
	for _, b := range h.Buckets {
		n += uint64(b)
	}
	return n
}

// Counters are the cumulative counters of one connection, in the kernel's
// widths: the one value type of a record (ConnectionStats.Monotonic), of
// what the tracer reported of a connection (known) and of a client's
// baseline (netstate). A client's series add them up in 64 bits
// (netstate.Counters). Adding a counter is a field here and a line in
// each method below; the record's field is read in countersOf and written in
// setRecordCounters (record.go).
type Counters struct {
	SentBytes, RecvBytes uint64
	Retransmits          uint32
	// SentSegments counts TCP data segments sent, retransmissions
	// included (TCP_INFO's tcpi_data_segs_out): the denominator of a
	// retransmit ratio.
	SentSegments uint32
	// RTT holds one RTT sample per round trip (the sockops RTT callback
	// runs once per round trip, not for every sample the kernel takes;
	// before Linux 6.10 it is the smoothed RTT at that moment).
	RTT RTTHistogram
}

// Max sets each counter of c to the larger of c's and o's: a live read
// races the kernel and may come out low, and a counter must never go down.
func (c *Counters) Max(o *Counters) {
	c.SentBytes = max(c.SentBytes, o.SentBytes)
	c.RecvBytes = max(c.RecvBytes, o.RecvBytes)
	c.Retransmits = max(c.Retransmits, o.Retransmits)
	c.SentSegments = max(c.SentSegments, o.SentSegments)
	for i, v := range o.RTT.Buckets {
		c.RTT.Buckets[i] = max(c.RTT.Buckets[i], v)
	}
	c.RTT.SumMicros = max(c.RTT.SumMicros, o.RTT.SumMicros)
}

// Add adds o into c.
func (c *Counters) Add(o *Counters) {
	c.SentBytes += o.SentBytes
	c.RecvBytes += o.RecvBytes
	c.Retransmits += o.Retransmits
	c.SentSegments += o.SentSegments
	for i, v := range o.RTT.Buckets {
		c.RTT.Buckets[i] += v
	}
	c.RTT.SumMicros += o.RTT.SumMicros
}

// Sub returns c − b, per counter. A counter below b's means b was of an
// entry the kernel replaced since: if whole, it counts whole and reset
// says so; else it counts 0 (the floor).
func (c *Counters) Sub(b *Counters, whole bool) (d Counters, reset bool) {
	sub := func(v, base uint64) uint64 {
		if v < base {
			reset = true
			if whole {
				return v
			}
			return 0
		}
		return v - base
	}
	d.SentBytes = sub(c.SentBytes, b.SentBytes)
	d.RecvBytes = sub(c.RecvBytes, b.RecvBytes)
	d.Retransmits = uint32(sub(uint64(c.Retransmits), uint64(b.Retransmits)))
	d.SentSegments = uint32(sub(uint64(c.SentSegments), uint64(b.SentSegments)))
	for i, v := range c.RTT.Buckets {
		d.RTT.Buckets[i] = uint32(sub(uint64(v), uint64(b.RTT.Buckets[i])))
	}
	d.RTT.SumMicros = sub(c.RTT.SumMicros, b.RTT.SumMicros)
	return d, reset
}
