package netstate

import (
	"reflect"
	"slices"
	"testing"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// sub floors each counter at 0 and says when one was below: every field of
// Counters, the RTT buckets and the lifecycle counts included.
func TestCountersSubFloors(t *testing.T) {
	var a, b Counters
	a.SentBytes, a.RecvBytes, a.Retransmits, a.SentSegments = 100, 50, 7, 9
	a.RTT.Buckets[31], a.RTT.SumMicros = 4, 1000
	a.Opened, a.Closed, a.Failed, a.RTTCount = 3, 2, 1, 4
	b = a
	if reset := a.sub(&b); reset || a != (Counters{}) {
		t.Fatalf("a - a = %+v (reset %v), want nothing", a, reset)
	}
	// One counter at a time below its subtrahend: that one floors at 0,
	// and reset says so. Every uint64 of Counters, found by reflection:
	// a counter added to Counters or tracer.Totals is covered.
	fields := uint64Fields(reflect.TypeFor[Counters](), nil)
	if len(fields) < 4+tracer.NumRTTBuckets+1+4 {
		t.Fatalf("%d counters found by reflection", len(fields))
	}
	at := func(c *Counters, path []int) *uint64 {
		v := reflect.ValueOf(c).Elem()
		for _, i := range path {
			if v.Kind() == reflect.Array {
				v = v.Index(i)
			} else {
				v = v.Field(i)
			}
		}
		return v.Addr().Interface().(*uint64)
	}
	for i, f := range fields {
		var x, y Counters
		for _, g := range fields {
			*at(&x, g), *at(&y, g) = 10, 4
		}
		x.has, y.has = ^sections(0), ^sections(0) // every section, a future one too
		*at(&y, f) = 11
		if reset := x.sub(&y); !reset {
			t.Errorf("field %d below: no reset", i)
		}
		for j, g := range fields {
			want := uint64(6)
			if j == i {
				want = 0
			}
			if got := *at(&x, g); got != want {
				t.Errorf("field %d below: field %d = %d, want %d", i, j, got, want)
			}
		}
	}
}

// uint64Fields returns the paths (field or array indexes) of every uint64
// in t.
func uint64Fields(t reflect.Type, path []int) [][]int {
	var out [][]int
	switch t.Kind() {
	case reflect.Uint64:
		return [][]int{slices.Clone(path)}
	case reflect.Struct:
		for i := range t.NumField() {
			out = append(out, uint64Fields(t.Field(i).Type, append(path, i))...)
		}
	case reflect.Array:
		for i := range t.Len() {
			out = append(out, uint64Fields(t.Elem(), append(path, i))...)
		}
	}
	return out
}

// A TCP connection's handshake counts with its opening, its life (from
// ESTABLISHED: an active open's record starts at its SYN, a passive one's
// at ESTABLISHED) with its closing; neither for a connection found at
// start-up, nor for UDP.
func TestTimings(t *testing.T) {
	const ms = uint64(1_000_000) // ns
	active := tracer.ConnectionStats{Type: tracer.TCP, Established: true, HandshakeMicros: 1200, StartEpoch: 1000 * ms}
	d := all(&active)
	if d.Handshakes.Buckets[3] != 1 || d.Handshakes.Count() != 1 || d.Handshakes.SumMicros != 1200 || d.Durations.Count() != 0 {
		t.Errorf("open, handshake 1.2 ms: handshakes %+v durations %+v, want one in bucket 3 (<= 2.5 ms), no duration", d.Handshakes, d.Durations)
	}
	active.Closed, active.LastUpdateEpoch = true, 1000*ms+1200*1000+5000*ms
	if d := ends(&active); d.Durations.Buckets[4] != 1 || d.Durations.SumMicros != 5_000_000 || d.Handshakes.Count() != 0 {
		t.Errorf("closed after 5 s established: durations %+v handshakes %+v, want one of 5 s in bucket 4 (<= 10 s) and no handshake", d.Durations, d.Handshakes)
	}
	passive := tracer.ConnectionStats{Type: tracer.TCP, Established: true, ServerSide: true, HandshakeMicros: 1200,
		StartEpoch: 1000 * ms, LastUpdateEpoch: 3000 * ms, Closed: true}
	if d := all(&passive); d.Durations.SumMicros != 2_000_000 || d.Handshakes.SumMicros != 1200 {
		t.Errorf("passive, established at 1 s, closed at 3 s: durations %+v handshakes %+v", d.Durations, d.Handshakes)
	}
	// Beyond the last bound: +Inf.
	long := active
	long.HandshakeMicros = 40_000_000
	if d := all(&long); d.Handshakes.Buckets[len(HandshakeBounds)] != 1 {
		t.Errorf("a 40 s handshake: %+v, want it in +Inf", d.Handshakes)
	}
	for _, c := range []tracer.ConnectionStats{
		{Type: tracer.TCP, Established: true, Preexisting: true, Closed: true, HandshakeMicros: 5, LastUpdateEpoch: 9 * ms},
		{Type: tracer.UDP, Established: true, Closed: true, HandshakeMicros: 5, LastUpdateEpoch: 9 * ms},
		{Type: tracer.TCP, Closed: true, LastUpdateEpoch: 9 * ms}, // failed
	} {
		if d := all(&c); d.Handshakes != (Timing{}) || d.Durations != (Timing{}) {
			t.Errorf("%+v: handshakes %+v durations %+v, want none", c, d.Handshakes, d.Durations)
		}
	}
}

// Add and sub skip the sections neither side has (has), and a section
// one side has is added or subtracted whole: has follows the counts.
func TestCountersSections(t *testing.T) {
	failed := tracer.ConnectionStats{Type: tracer.TCP, Closed: true, End: tracer.ReasonRefused}
	reset := tracer.ConnectionStats{Type: tracer.TCP, Established: true, Closed: true, End: tracer.ReasonReset, HandshakeMicros: 300, LastUpdateEpoch: 5e9}
	var sum Counters
	for _, c := range []tracer.ConnectionStats{failed, reset} {
		d := all(&c)
		sum.Add(&d)
	}
	if sum.Failures[tracer.ReasonRefused] != 1 || sum.Aborts[tracer.ReasonReset] != 1 || sum.Handshakes.Count() != 1 || sum.Durations.Count() != 1 {
		t.Fatalf("sum %+v", sum)
	}
	var none Counters
	if sum.has != hasReasons|hasHandshakes|hasDurations || none.has != 0 {
		t.Errorf("has %b, want every section", sum.has)
	}
	// sum − sum's own failure: one section each side has.
	d := all(&failed)
	left := sum
	left.sub(&d)
	if left.Failures != ([tracer.NumReasons]uint64{}) || left.Aborts[tracer.ReasonReset] != 1 {
		t.Errorf("sum - failure: failures %v aborts %v", left.Failures, left.Aborts)
	}
	// A side without a section: the other's counts stay.
	plain := Counters{Opened: 1}
	keep := sum
	keep.sub(&plain)
	if keep.Handshakes != sum.Handshakes || keep.Durations != sum.Durations || keep.Failures != sum.Failures {
		t.Errorf("sum - nothing of its sections changed them: %+v", keep)
	}
}
