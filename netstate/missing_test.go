package netstate

import (
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// A client whose first scrape came while connection 1 was missing (kept
// for a's offsets) has no offset of it: when 1 is dropped with values
// older than that client, it counts nothing of it; and once a, the only
// client holding it, goes, its entry goes (a review found both wrong: the
// entry's first scrape was before the client's, so it looked held).
func TestClientDuringAGapHoldsNoOffset(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 100, 0)
	f.open(2, 1, 0)
	scrape(t, st, "a") // 1 into a's offsets
	x := f.vanish(1)
	scrape(t, st, "a") // kept for a
	scrape(t, st, "b") // b's first: 1 not in it
	st.Closed([]tracer.ConnectionStats{x})
	if got := scrape(t, st, "b").of(1); got != (sums{}) {
		t.Errorf("b counts %+v of a connection gone before it came", got)
	}

	f.open(3, 100, 0)
	scrape(t, st, "a")
	f.vanish(3)
	scrape(t, st, "a")
	scrape(t, st, "c")
	st.RemoveClient("a")
	scrape(t, st, "c")
	scrape(t, st, "b")
	if _, kept := st.live[tracer.ConnKey{Cookie: 3}]; kept {
		t.Errorf("the entry of 3 is kept (missing %d) after a, the only client holding it, went", st.missing)
	}
	checkKeyTable(t, st)
}

// A kept entry that comes back after a gap: a client whose first scrape
// fell in the gap holds no offset of it (it counts what it counts of any
// connection it first saw after its first scrape), the others do.
func TestClientDuringAGapThenBack(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 100, 0)
	scrape(t, st, "a")
	x := f.vanish(1)
	scrape(t, st, "a")
	scrape(t, st, "b") // in the gap
	x.Monotonic.SentBytes += 5
	f.mu.Lock()
	f.active[x.Key] = x
	f.mu.Unlock()
	scrape(t, st, "a")
	scrape(t, st, "b")
	f.hold(1) // leaving, its fold waiting: offsets decide what it counts
	if got, want := scrape(t, st, "a").of(1), (sums{Sent: 5, Closed: 1}); got != want {
		t.Errorf("a: %+v, want %+v", got, want)
	}
	// b: not in its offsets, older than it, gone... back and closed after
	// b came: counted whole, as a connection b first saw after its first
	// scrape.
	if got, want := scrape(t, st, "b").of(1), (sums{Sent: 105, Opened: 1, Closed: 1}); got != want {
		t.Errorf("b: %+v, want %+v", got, want)
	}
}

// Random operations, with connections vanishing from the snapshots, coming
// back, being folded late or showing up leaving, duplicated snapshots,
// clients removed and expiring: after each, State.missing is the number of
// entries the last snapshot did not have, every such entry is held by a
// client whose first snapshot had it (and not leaving), and the label sets
// are those of the entries. (A review's model.)
func TestMissingEntriesRandom(t *testing.T) {
	for seed := int64(1); seed <= 300; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { missingRandom(t, seed) })
	}
}

// recTracer records the keys of each snapshot's connections; dup lists
// them twice.
type recTracer struct {
	*fakeTracer
	last map[uint64]bool
	dup  bool
}

func (d *recTracer) Snapshot() (*tracer.Snapshot, error) {
	s, err := d.fakeTracer.Snapshot()
	if err == nil {
		d.last = map[uint64]bool{}
		for _, c := range s.Conns {
			d.last[c.Key.Cookie] = true
		}
		if d.dup {
			s.Conns = append(s.Conns, s.Conns...)
			s.Leaving = append(s.Leaving, s.Leaving...)
		}
	}
	return s, err
}

func missingRandom(t *testing.T, seed int64) {
	r := rand.New(rand.NewSource(seed))
	f := newFakeTracer()
	clk := t0
	st := New[tracer.ConnKey](f, perConn{}, Config{MaxClients: 3, ClientExpiry: time.Hour, Now: func() time.Time { return clk }})
	f.st = st
	rt := &recTracer{fakeTracer: f}
	st.src = rt
	holders := map[string]map[uint64]bool{} // each client's first snapshot
	vanished := map[uint64]tracer.ConnectionStats{}
	next := uint64(1)
	active := func() []uint64 {
		f.mu.Lock()
		defer f.mu.Unlock()
		var out []uint64
		for k := range f.active {
			out = append(out, k.Cookie)
		}
		slices.Sort(out)
		return out
	}
	anyVanished := func() (uint64, bool) {
		if len(vanished) == 0 {
			return 0, false
		}
		return slices.Min(slices.Collect(maps.Keys(vanished))), true
	}
	check := func(where string) {
		t.Helper()
		st.mu.Lock()
		n := 0
		var unheld []string
		for k, lc := range st.live {
			if lc.seen >= st.gen {
				continue
			}
			n++
			held := false
			for id, c := range st.clients {
				if !c.fresh && holders[id][k.Cookie] && (lc.leaving == 0 || lc.leaving > c.firstGen) {
					held = true
				}
			}
			if !held {
				unheld = append(unheld, fmt.Sprintf("%d%+v", k.Cookie, lc))
			}
		}
		missing, gen := st.missing, st.gen
		st.mu.Unlock()
		if missing != n {
			t.Fatalf("seed %d, %s (scrape %d): missing %d, entries the last snapshot did not have %d", seed, where, gen, missing, n)
		}
		if len(unheld) > 0 && where == "after a scrape" {
			t.Fatalf("seed %d, %s (scrape %d): entries kept that no client's offsets hold: %v", seed, where, gen, unheld)
		}
		checkKeyTable(t, st)
	}
	op := func() {
		live := active()
		switch o := r.Intn(14); {
		case o < 3 || len(live) == 0:
			f.open(next, uint64(r.Intn(100)), 0)
			next++
		case o < 5:
			f.add(live[r.Intn(len(live))], uint64(r.Intn(100)), 0)
		case o < 6:
			f.close(live[r.Intn(len(live))])
		case o < 7:
			f.drop(live[r.Intn(len(live))])
		case o < 8:
			f.hold(live[r.Intn(len(live))])
		case o < 9:
			f.mu.Lock()
			var held []uint64
			for k := range f.held {
				held = append(held, k.Cookie)
			}
			f.mu.Unlock()
			slices.Sort(held)
			if len(held) > 0 {
				f.release(held[r.Intn(len(held))], nil)
			}
		case o < 11:
			k := live[r.Intn(len(live))]
			vanished[k] = f.vanish(k)
		case o < 12:
			if k, ok := anyVanished(); ok { // back
				x := vanished[k]
				delete(vanished, k)
				x.Monotonic.SentBytes += 5
				x.LastUpdateEpoch = f.tick()
				f.mu.Lock()
				f.active[x.Key] = x
				f.mu.Unlock()
			}
		case o < 13:
			if k, ok := anyVanished(); ok { // its fold, at last
				x := vanished[k]
				delete(vanished, k)
				if r.Intn(2) == 0 {
					x.Closed = true
					x.LastUpdateEpoch = f.tick()
				}
				if st.Clients() > 0 {
					st.Closed([]tracer.ConnectionStats{x})
				}
			}
		default:
			if k, ok := anyVanished(); ok { // it shows up leaving
				x := vanished[k]
				delete(vanished, k)
				x.Closed = true
				x.LastUpdateEpoch = f.tick()
				f.mu.Lock()
				f.held[x.Key] = x
				f.mu.Unlock()
			}
		}
	}
	ids := []string{"a", "b", "c", "d"}
	for range 500 {
		op()
		check("after an operation")
		switch r.Intn(20) {
		case 0:
			st.RemoveClient(ids[r.Intn(len(ids))])
			check("after a removal")
		case 1:
			clk = clk.Add(time.Duration(r.Intn(90)) * time.Minute) // may expire clients
		}
		if r.Intn(3) != 0 {
			continue
		}
		id := ids[r.Intn(len(ids))]
		rt.dup = r.Intn(5) == 0
		if r.Intn(3) == 0 {
			f.during = op
		}
		v, err := st.Scrape(id, clk)
		f.during = nil
		if err != nil {
			continue // too many clients
		}
		if v.NewClient {
			holders[id] = rt.last
		}
		check("after a scrape")
	}
}

// A connection older than a client and not in its offsets (the client's
// first snapshot missed it: here it was missing, kept for another
// client's offsets, or forgotten) is reported again with values older than
// the client, then dropped idle with them: the client counts at each
// scrape what the fold will add (nothing), not all of it and then nothing
// (a review found the counter going down).
func TestOlderNotInOffsetsNeverGoesDown(t *testing.T) {
	for _, forgotten := range []bool{false, true} {
		t.Run(fmt.Sprintf("forgotten=%v", forgotten), func(t *testing.T) {
			f := newFakeTracer()
			st := newTestState(f, Config{})
			f.open(1, 100, 0)
			scrape(t, st, "a") // 1 into a's offsets
			x := f.vanish(1)
			if forgotten {
				st.RemoveClient("a")
			} else {
				scrape(t, st, "a") // kept for a
			}
			scrape(t, st, "b") // b's first, without 1
			f.mu.Lock()
			f.active[x.Key] = x // back, idle: its values are from before b
			f.mu.Unlock()
			v1 := scrape(t, st, "b").of(1)
			f.vanish(1)
			st.Closed([]tracer.ConnectionStats{x}) // dropped idle, with them
			v2 := scrape(t, st, "b").of(1)
			if v1 != (sums{}) || v2 != (sums{}) {
				t.Errorf("b: %+v live, then %+v folded; want nothing (all of it happened before b)", v1, v2)
			}
		})
	}
}
