package tracer

import (
	"reflect"
	"testing"
)

// fill sets every counter of c, a pointer to counters of any width (every
// number reachable in it, the RTT buckets included), to v.
func fill(c any, v uint64) {
	var set func(reflect.Value)
	set = func(f reflect.Value) {
		switch f.Kind() {
		case reflect.Struct:
			for i := range f.NumField() {
				set(f.Field(i))
			}
		case reflect.Array:
			for i := range f.Len() {
				set(f.Index(i))
			}
		case reflect.Uint32, reflect.Uint64:
			f.SetUint(v)
		default:
			panic("Counters holds a " + f.Kind().String())
		}
	}
	set(reflect.ValueOf(c).Elem())
}

func filled(v uint64) Counters {
	var c Counters
	fill(&c, v)
	return c
}

// Every field of Counters goes through Max, Add and Sub: a counter added to
// the type but forgotten in a method fails here.
func TestCountersMethodsCoverEveryField(t *testing.T) {
	c := filled(3)
	c.Max(&Counters{})
	if want := filled(3); c != want {
		t.Errorf("Max with zero lowered a counter: %+v", c)
	}
	lo := filled(1)
	lo.Max(&c)
	if lo != c {
		t.Errorf("Max missed a counter: %+v", lo)
	}
	sum := filled(2)
	sum.Add(&c, true)
	if want := filled(5); sum != want {
		t.Errorf("Add missed a counter: %+v", sum)
	}
	norrt := filled(2)
	norrt.Add(&c, false)
	if norrt.RTT != filled(2).RTT || norrt.SentBytes != 5 {
		t.Errorf("Add without the RTT: %+v", norrt)
	}
	d, reset := sum.Sub(&c, true)
	if want := filled(2); d != want || reset {
		t.Errorf("Sub = %+v reset %v, want every counter 2, no reset", d, reset)
	}
	// Below the base: whole (a stats reset) or the floor.
	d, reset = c.Sub(&sum, true)
	if d != c || !reset {
		t.Errorf("Sub below the base, whole = %+v reset %v, want c and a reset", d, reset)
	}
	d, reset = c.Sub(&sum, false)
	if d != (Counters{}) || !reset {
		t.Errorf("Sub below the base, floor = %+v reset %v, want zero and a reset", d, reset)
	}
	var wide Totals
	fill(&wide, 3)
	if got := c.Widen(); got != wide {
		t.Errorf("Widen missed a counter: %+v", got)
	}
}
