package netstate

import (
	"fmt"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// perCookie labels by cookie only: a connection and its addendum (a key of
// their own, one socket) share a label set, as with the collector's labels.
type perCookie struct{}

func (perCookie) Key(c *tracer.ConnectionStats) tracer.ConnKey {
	return tracer.ConnKey{Cookie: c.Key.Cookie}
}
func (perCookie) Values(k tracer.ConnKey) []string { return []string{fmt.Sprint(k.Cookie)} }
func (perCookie) Overflow() []string               { return []string{"overflow"} }
func (perCookie) Text(v []string) string           { return v[0] }

// A reset sent after a connection's final record comes as an addendum: it
// adds that reset to the connection's label set, for every client, and
// opens, closes and fails nothing.
func TestAddendumCountsOnlyItsReset(t *testing.T) {
	f := newFakeTracer()
	st := New[tracer.ConnKey](f, perCookie{}, Config{MaxClients: 4, ClientExpiry: time.Hour, Now: func() time.Time { return t0 }})
	f.st = st
	for _, id := range []string{"a", "b"} {
		scrape(t, st, id)
	}
	c := f.open(1, 100, 200)
	f.close(1)
	add := c
	add.Key.Generation = c.Key.Generation | 1<<31 | 1<<24
	add.Established, add.Closed, add.Preexisting, add.Addendum = true, true, true, true
	add.Monotonic = tracer.Counters{Detail: tracer.Detail[uint32]{ResetsSent: 1}}
	add.StartEpoch = f.tick()
	add.LastUpdateEpoch = add.StartEpoch
	st.Closed([]tracer.ConnectionStats{add})
	for _, id := range []string{"a", "b"} {
		s := scrape(t, st, id)["1"]
		if got, want := s.Detail.ResetsSent, uint64(1); got != want {
			t.Errorf("%s: resets sent %d, want %d", id, got, want)
		}
		if s.Opened != 1 || s.Closed != 1 || s.Failed != 0 || s.SentBytes != 100 || s.RecvBytes != 200 {
			t.Errorf("%s: opened %d closed %d failed %d sent %d received %d, want 1 1 0 100 200", id, s.Opened, s.Closed, s.Failed, s.SentBytes, s.RecvBytes)
		}
		if n := s.Durations.Count(); n != 1 {
			t.Errorf("%s: %d durations, want the connection's only", id, n)
		}
	}
}

// The zero-window gauge: the connections stalled now; once a label set
// had one, it is exported (ZeroWindowSeen) at 0 too.
func TestZeroWindowGauge(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "a")
	f.open(1, 10, 10)
	if s := scrape(t, st, "a")["1"]; s.ZeroWindow != 0 || s.ZeroWindowSeen {
		t.Fatalf("before any stall: %d, seen %v", s.ZeroWindow, s.ZeroWindowSeen)
	}
	f.setZeroWindow(1, true)
	if s := scrape(t, st, "a")["1"]; s.ZeroWindow != 1 || !s.ZeroWindowSeen {
		t.Errorf("stalled: %d, seen %v; want 1, true", s.ZeroWindow, s.ZeroWindowSeen)
	}
	f.setZeroWindow(1, false)
	if s := scrape(t, st, "a")["1"]; s.ZeroWindow != 0 || !s.ZeroWindowSeen {
		t.Errorf("after the stall: %d, seen %v; want 0, true", s.ZeroWindow, s.ZeroWindowSeen)
	}
	// A closed connection is not stalled, whatever its last read said.
	f.setZeroWindow(1, true)
	f.close(1)
	if s := scrape(t, st, "a")["1"]; s.ZeroWindow != 0 {
		t.Errorf("closed: %d stalled", s.ZeroWindow)
	}
}

// An addendum in the overflow series is not one more connection there:
// series_overflow_total counts connections, each once.
func TestAddendumNotAnOverflowConnection(t *testing.T) {
	f := newFakeTracer()
	st := New[tracer.ConnKey](f, perCookie{}, Config{MaxClients: 4, MaxSeries: 1, ClientExpiry: time.Hour, Now: func() time.Time { return t0 }})
	f.st = st
	scrape(t, st, "a")
	f.open(1, 10, 10) // the one series
	scrape(t, st, "a")
	c := f.open(2, 20, 20) // overflow
	f.close(2)
	add := c
	add.Key.Generation |= 1<<31 | 1<<24
	add.Established, add.Closed, add.Preexisting, add.Addendum = true, true, true, true
	add.Monotonic = tracer.Counters{Detail: tracer.Detail[uint32]{ResetsSent: 1}}
	add.StartEpoch = f.tick()
	add.LastUpdateEpoch = add.StartEpoch
	st.Closed([]tracer.ConnectionStats{add})
	v, err := st.Scrape("a", t0)
	if err != nil {
		t.Fatal(err)
	}
	if v.OverflowConns != 1 {
		t.Errorf("overflow connections %d, want 1 (the addendum is not one)", v.OverflowConns)
	}
	for _, s := range v.Series {
		if s.Overflow && s.Detail.ResetsSent != 1 {
			t.Errorf("overflow series: resets sent %d, want 1", s.Detail.ResetsSent)
		}
	}
}
