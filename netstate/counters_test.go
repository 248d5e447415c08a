package netstate

import (
	"reflect"
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
		c.Key = tracer.ConnKey{Cookie: 9}
		cl := &client[string]{base: map[tracer.ConnKey]baseline{}}
		cl.takeBaseline(&c)
		b := cl.base[c.Key]
		wide := cl.wideRTT[c.Key]
		if got := b.counters(&wide); got != c.Monotonic {
			t.Errorf("%s: %+v back, want %+v", name, got, c.Monotonic)
		}
		if d, reset := cl.since(&c, &b); reset || d != (Counters{}) {
			t.Errorf("%s: since its own baseline: %+v (reset %v), want nothing", name, d, reset)
		}
		cl.dropBaseline(c.Key)
		if len(cl.base) != 0 || len(cl.wideRTT) != 0 {
			t.Errorf("%s: %d baselines, %d wide ones left after the drop", name, len(cl.base), len(cl.wideRTT))
		}
	}
}

// One baseline per connection older than a client, per client: 43 MB at
// 200,000 sockets when it was 168 bytes (BENCHMARKS.md §13). Without a
// pointer, the collector does not scan a client's baselines (with one, it
// scanned 23 MB of them per collection at 200,000: a review's
// measurement).
func TestBaselineSize(t *testing.T) {
	if n := unsafe.Sizeof(baseline{}); n > 64 {
		t.Errorf("a baseline is %d bytes, want at most 64", n)
	}
	ty := reflect.TypeFor[baseline]()
	for i := range ty.NumField() {
		switch f := ty.Field(i); f.Type.Kind() {
		case reflect.Bool, reflect.Uint8, reflect.Uint32, reflect.Uint64:
		case reflect.Array:
			if f.Type.Elem().Kind() != reflect.Uint32 {
				t.Errorf("baseline.%s is an array of %s", f.Name, f.Type.Elem())
			}
		default:
			t.Errorf("baseline.%s is a %s: the baselines may hold pointers", f.Name, f.Type)
		}
	}
}
