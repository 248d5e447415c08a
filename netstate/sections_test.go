package netstate

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// hasCovers reports a section holding a count without its has bit.
func hasCovers(c *Counters) error {
	if c.has&hasReasons == 0 && (c.Failures != [tracer.NumReasons]uint64{} || c.Aborts != [tracer.NumReasons]uint64{}) {
		return fmt.Errorf("reasons without has: %v %v", c.Failures, c.Aborts)
	}
	if c.has&hasHandshakes == 0 && c.Handshakes != (Timing{}) {
		return fmt.Errorf("handshakes without has: %+v", c.Handshakes)
	}
	if c.has&hasDurations == 0 && c.Durations != (Timing{}) {
		return fmt.Errorf("durations without has: %+v", c.Durations)
	}
	return nil
}

func checkStateHas[K comparable](t *testing.T, st *State[K], where string) {
	t.Helper()
	if err := hasCovers(&st.end); err != nil {
		t.Fatalf("%s: s.end: %v", where, err)
	}
	for id, c := range st.clients {
		sers := append([]*series{}, c.list...)
		if c.overflow != nil {
			sers = append(sers, c.overflow)
		}
		for _, ser := range sers {
			for name, x := range map[string]*Counters{"total": &ser.total, "live": &ser.live, "offset": &ser.offset} {
				if err := hasCovers(x); err != nil {
					t.Fatalf("%s: client %s series %s %s: %v", where, id, ser.text, name, err)
				}
			}
		}
	}
	for k, tb := range st.tombs {
		if err := hasCovers(&tb.d); err != nil {
			t.Fatalf("%s: tomb %v: %v", where, k, err)
		}
	}
}

func randConn(r *rand.Rand, cookie uint64) tracer.ConnectionStats {
	c := tracer.ConnectionStats{Key: tracer.ConnKey{Cookie: cookie}, Type: tracer.TCP}
	if r.Intn(5) == 0 {
		c.Type = tracer.UDP
	}
	c.Established = r.Intn(4) != 0
	c.Closed = r.Intn(2) == 0
	c.Preexisting = r.Intn(6) == 0
	c.ServerSide = r.Intn(2) == 0
	c.End = tracer.Reason(r.Intn(int(tracer.NumReasons)))
	if r.Intn(2) == 0 {
		c.HandshakeMicros = uint32(r.Intn(20_000_000))
	}
	c.StartEpoch = uint64(r.Intn(1e9))
	c.LastUpdateEpoch = c.StartEpoch + uint64(r.Intn(1e12))
	c.Monotonic.SentBytes = uint64(r.Intn(1000))
	if r.Intn(2) == 0 {
		c.Monotonic.RTT.Buckets[r.Intn(tracer.NumRTTBuckets)] = uint32(r.Intn(5))
	}
	return c
}

// Every producer sets has for what it counts, and Add/sub keep it so.
func TestSectionsKeptByEveryProducer(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	var pool []Counters
	for i := range 20000 {
		x := randConn(r, uint64(i))
		var d Counters
		switch r.Intn(5) {
		case 0:
			d = all(&x)
		case 1, 2:
			d = ends(&x)
		case 3:
			y := randConn(r, uint64(i))
			a, b := all(&x), all(&y)
			d = minus(&a, &b)
		case 4:
			if len(pool) > 1 {
				d = pool[r.Intn(len(pool))]
				o := pool[r.Intn(len(pool))]
				if r.Intn(2) == 0 {
					d.Add(&o)
				} else {
					d.sub(&o)
				}
			}
		}
		if err := hasCovers(&d); err != nil {
			t.Fatalf("step %d: %v (%+v)", i, err, x)
		}
		pool = append(pool, d)
	}
}

// Random folds and scrapes with failures, aborts, handshakes and durations:
// no Counters of the state ever holds a section without its has bit, and
// no section of a series goes down.
func TestSectionsKeptByTheState(t *testing.T) {
	for seed := int64(0); seed < 200; seed++ {
		r := rand.New(rand.NewSource(seed))
		f := newFakeTracer()
		st := newTestState(f, Config{MaxSeries: 1 + r.Intn(6)})
		next := uint64(1)
		var live []uint64
		var held []uint64
		prev := map[string]map[string]Counters{}
		for step := range 300 {
			switch op := r.Intn(8); {
			case op < 3:
				c := f.open(next, uint64(r.Intn(100)), 0)
				f.mu.Lock()
				c.Established = r.Intn(4) != 0
				c.ServerSide = r.Intn(2) == 0
				c.End = tracer.Reason(r.Intn(int(tracer.NumReasons)))
				if r.Intn(2) == 0 {
					c.HandshakeMicros = uint32(1 + r.Intn(5_000_000))
				}
				f.active[c.Key] = c
				f.mu.Unlock()
				live = append(live, next)
				next++
			case op == 3 && len(live) > 0:
				i := r.Intn(len(live))
				f.add(live[i], uint64(r.Intn(100)), 1)
			case op == 4 && len(live) > 0:
				i := r.Intn(len(live))
				f.close(live[i])
				live = append(live[:i], live[i+1:]...)
			case op == 5 && len(live) > 0:
				i := r.Intn(len(live))
				f.hold(live[i])
				held = append(held, live[i])
				live = append(live[:i], live[i+1:]...)
			case op == 6 && len(held) > 0:
				f.release(held[0], nil)
				held = held[1:]
			default:
				id := fmt.Sprintf("c%d@10.0.0.%d", r.Intn(4), r.Intn(2))
				if r.Intn(3) == 0 && len(live) > 0 {
					k := live[r.Intn(len(live))]
					f.during = func() { f.close(k) }
					for i, x := range live {
						if x == k {
							live = append(live[:i], live[i+1:]...)
							break
						}
					}
				}
				v, err := st.Scrape(id, t0)
				f.during = nil
				if err != nil {
					t.Fatal(err)
				}
				cur := map[string]Counters{}
				for _, s := range v.Series {
					cur[s.Text] = s.Counters
					if p, ok := prev[id][s.Text]; ok && !v.NewClient {
						for i := range p.Failures {
							if s.Failures[i] < p.Failures[i] || s.Aborts[i] < p.Aborts[i] {
								t.Fatalf("seed %d step %d %s %s: reasons down", seed, step, id, s.Text)
							}
						}
						if s.Handshakes.Count() < p.Handshakes.Count() || s.Durations.Count() < p.Durations.Count() {
							t.Fatalf("seed %d step %d %s %s: timings down", seed, step, id, s.Text)
						}
					}
				}
				prev[id] = cur
			}
			checkStateHas(t, st, fmt.Sprintf("seed %d step %d", seed, step))
		}
		if st.tel.statsResets != 0 {
			t.Fatalf("seed %d: statsResets %d", seed, st.tel.statsResets)
		}
	}
}

// Two clients, one older than a connection's client-relative age: the fold
// loop hands one client d and another the scratch s.end; each gets its own.
func TestEndScratchPerClient(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "old")
	f.open(1, 10, 0) // older than "new" below
	f.mu.Lock()
	c := f.active[tracer.ConnKey{Cookie: 1}]
	c.HandshakeMicros, c.End = 700, tracer.ReasonReset
	f.active[c.Key] = c
	f.mu.Unlock()
	f.open(2, 10, 0)
	f.mu.Lock()
	c = f.active[tracer.ConnKey{Cookie: 2}]
	c.Established, c.End = false, tracer.ReasonRefused
	f.active[c.Key] = c
	f.mu.Unlock()
	// "new" is admitted, its snapshot read, both leave while it reads.
	f.during = func() { f.close(1); f.close(2) }
	nv := scrape(t, st, "new")
	f.during = nil
	ov := scrape(t, st, "old")
	nv = scrape(t, st, "new")
	o1, n1 := ov["1"], nv["1"]
	if o1.Handshakes.Count() != 1 || o1.Durations.Count() != 1 || o1.Aborts[tracer.ReasonReset] != 1 || o1.SentBytes != 10 {
		t.Errorf("old client, conn 1: %+v", o1)
	}
	if n1.Handshakes.Count() != 0 || n1.Durations.Count() != 1 || n1.Aborts[tracer.ReasonReset] != 1 || n1.Opened != 0 {
		t.Errorf("new client, conn 1: hs %d dur %d aborts %v opened %d", n1.Handshakes.Count(), n1.Durations.Count(), n1.Aborts, n1.Opened)
	}
	if ov["2"].Failures[tracer.ReasonRefused] != 1 || nv["2"].Failures[tracer.ReasonRefused] != 1 {
		t.Errorf("conn 2 failures: old %v new %v", ov["2"].Failures, nv["2"].Failures)
	}
	checkStateHas(t, st, "end")
}

// sub's has is the union: a section only the subtrahend has still floors
// and says reset (TestCountersSubFloors sets every bit on both sides, so
// it cannot tell union from intersection), and the minuend's own section
// keeps its bit.
func TestSubTakesEitherSidesSections(t *testing.T) {
	var x, y Counters
	y.Handshakes.Buckets[3], y.has = 1, hasHandshakes
	if !x.sub(&y) {
		t.Errorf("section only in o: no reset")
	}
	var a, b Counters
	a.Aborts[2], a.has = 5, hasReasons
	b.Opened = 0
	a.sub(&b)
	if a.Aborts[2] != 5 || a.has&hasReasons == 0 {
		t.Errorf("own section lost: %v has %b", a.Aborts, a.has)
	}
	b.Aborts[2], b.has = 7, hasReasons
	a2 := Counters{}
	a2.Aborts[2], a2.has = 5, hasReasons
	if !a2.sub(&b) || a2.Aborts[2] != 0 {
		t.Errorf("below: %v", a2.Aborts)
	}
}
