package netstate

import "github.com/conntrace/conntrace_exporter/tracer"

// NumTimingBuckets bounds the buckets of a Timing: its bounds, and +Inf.
const NumTimingBuckets = 16

// Timing is a histogram of durations: per bucket (non-cumulative) the
// observations at or below its bound and above the previous one, the last
// used bucket +Inf; and their sum in µs. The bounds are the caller's
// (HandshakeBounds, DurationBounds).
type Timing struct {
	Buckets   [NumTimingBuckets]uint64
	SumMicros uint64
}

// HandshakeBounds are conntrace_handshake_seconds' bucket bounds, in µs:
// a handshake that lost its SYN or SYN-ACK once, twice, three or four
// times (1, 3, 7, 15 s: the retransmission timer doubles from 1 s) lands
// in a bucket of its own, above 1.5, 3.5, 7.5 and 15.5 s.
var HandshakeBounds = []uint64{
	100, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
	1_500_000, 3_500_000, 7_500_000, 15_500_000,
}

// DurationBounds are conntrace_connection_duration_seconds' bucket bounds,
// in µs: 1 ms to a day.
var DurationBounds = []uint64{
	1_000, 10_000, 100_000, 1_000_000, 10_000_000, 60_000_000, 300_000_000,
	900_000_000, 3_600_000_000, 14_400_000_000, 86_400_000_000,
}

// Each set of bounds leaves a bucket for +Inf.
var (
	_ [NumTimingBuckets - 1 - 15]struct{} // len(HandshakeBounds)
	_ [NumTimingBuckets - 1 - 11]struct{} // len(DurationBounds)
)

// observe adds one observation of us µs.
func (t *Timing) observe(bounds []uint64, us uint64) {
	i := 0
	for i < len(bounds) && us > bounds[i] {
		i++
	}
	t.Buckets[i]++
	t.SumMicros += us
}

// Count is the number of observations.
func (t *Timing) Count() uint64 {
	var n uint64
	for _, b := range t.Buckets {
		n += b
	}
	return n
}

func (t *Timing) add(o *Timing) {
	for i, v := range o.Buckets {
		t.Buckets[i] += v
	}
	t.SumMicros += o.SumMicros
}

// timings observes a TCP connection's handshake (once established, if
// timed) and its duration (once closed): established to closed. A
// connection found at start-up has neither.
func timings(c *tracer.ConnectionStats, d *Counters, handshake, duration bool) {
	if c.Type != tracer.TCP || !c.Established || c.Preexisting {
		return
	}
	if handshake && c.HandshakeMicros > 0 {
		d.Handshakes.observe(HandshakeBounds, uint64(c.HandshakeMicros))
		d.has |= hasHandshakes
	}
	if duration && c.Closed {
		// A passive open is tracked from ESTABLISHED, an active one from
		// its SYN.
		est := c.StartEpoch
		if !c.ServerSide {
			est += uint64(c.HandshakeMicros) * 1000
		}
		var us uint64
		if c.LastUpdateEpoch > est {
			us = (c.LastUpdateEpoch - est) / 1000
		}
		d.Durations.observe(DurationBounds, us)
		d.has |= hasDurations
	}
}
