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
