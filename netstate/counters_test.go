package netstate

import (
	"testing"
	"unsafe"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// A baseline gives back the counters it was taken of, whatever the shape
// of the RTT histogram: none, a few adjacent buckets anywhere (the last
// ones included), or buckets too far apart to be kept inline.
func TestBaselineKeepsTheCounters(t *testing.T) {
	hist := func(buckets map[int]uint32) tracer.RTTHistogram {
		var h tracer.RTTHistogram
		for i, v := range buckets {
			h.Buckets[i] = v
		}
		h.SumMicros = 12345
		return h
	}
	cases := map[string]tracer.RTTHistogram{
		"no sample":               {},
		"one bucket":              hist(map[int]uint32{7: 3}),
		"first bucket":            hist(map[int]uint32{0: 1}),
		"six adjacent":            hist(map[int]uint32{10: 1, 12: 4, 15: 9}),
		"the last six":            hist(map[int]uint32{26: 2, 31: 5}),
		"the last one":            hist(map[int]uint32{31: 1 << 31}),
		"seven apart: kept whole": hist(map[int]uint32{3: 1, 9: 2}),
		"first and last":          hist(map[int]uint32{0: 1, 31: 1}),
	}
	for name, h := range cases {
		c := tracer.ConnectionStats{Established: true, Monotonic: tracer.Counters{
			SentBytes: 1 << 40, RecvBytes: 77, Retransmits: 5, SentSegments: 1 << 30, RTT: h,
		}}
		b := baselineOf(&c)
		if got := b.counters(); got != c.Monotonic {
			t.Errorf("%s: %+v back, want %+v", name, got, c.Monotonic)
		}
		if d, reset := since(&c, &b); reset || d != (Counters{}) {
			t.Errorf("%s: since its own baseline: %+v (reset %v), want nothing", name, d, reset)
		}
	}
}

// One baseline per connection older than a client, per client: 43 MB at
// 200,000 sockets when it was 168 bytes (BENCHMARKS.md §13).
func TestBaselineSize(t *testing.T) {
	if n := unsafe.Sizeof(baseline{}); n > 72 {
		t.Errorf("a baseline is %d bytes, want at most 72", n)
	}
}
