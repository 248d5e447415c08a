package netstate

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// fakeTracer is a tracer whose connections the test sets: a snapshot lists
// the active ones, and one that closes (or is dropped: the tracer stopped
// reporting it) goes to the state at once, as the drain gives it.
type fakeTracer struct {
	mu     sync.Mutex
	active map[tracer.ConnKey]tracer.ConnectionStats
	// held are closed connections not given to the state yet (the
	// tracer's natWait): snapshots list them as Leaving.
	held  map[tracer.ConnKey]tracer.ConnectionStats
	st    tracer.Sink
	ktime uint64
	reads int
	// released counts the snapshots released (each once, after its step).
	released int
	err      error
	// during, when set, runs inside Snapshot after the connections were
	// copied: what it closes closes while the snapshot is read.
	during func()
}

func newFakeTracer() *fakeTracer {
	return &fakeTracer{active: map[tracer.ConnKey]tracer.ConnectionStats{}, held: map[tracer.ConnKey]tracer.ConnectionStats{}, ktime: 100}
}

func (f *fakeTracer) tick() uint64 { f.ktime += 10; return f.ktime }

// open adds an established TCP connection with the given totals.
func (f *fakeTracer) open(cookie uint64, sent, recv uint64) tracer.ConnectionStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := tracer.ConnectionStats{
		Key: tracer.ConnKey{Cookie: cookie}, Type: tracer.TCP, Direction: tracer.OUTGOING,
		Source: netip.MustParseAddr("10.0.0.1"), Dest: netip.AddrFrom4([4]byte{10, 0, 1, byte(cookie)}),
		SPort: 40000, DPort: 443, Established: true,
		Monotonic: tracer.Counters{SentBytes: sent, RecvBytes: recv},
	}
	c.StartEpoch = f.tick()
	c.LastUpdateEpoch = c.StartEpoch
	f.active[c.Key] = c
	return c
}

// add adds bytes to an active connection.
func (f *fakeTracer) add(cookie uint64, sent, recv uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := tracer.ConnKey{Cookie: cookie}
	c, ok := f.active[k]
	if !ok {
		panic(fmt.Sprintf("no active connection %d", cookie))
	}
	c.Monotonic.SentBytes += sent
	c.Monotonic.RecvBytes += recv
	c.LastUpdateEpoch = f.tick()
	f.active[k] = c
}

// setZeroWindow sets an active connection's zero-window flag (live).
func (f *fakeTracer) setZeroWindow(cookie uint64, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := tracer.ConnKey{Cookie: cookie}
	c := f.active[k]
	c.ZeroWindow = on
	c.LastUpdateEpoch = f.tick()
	f.active[k] = c
}

// vanish removes an active connection from the snapshots without a word to
// the state (the tracer reports every connection until it folds it: this
// is one that broke that), and returns its last values.
func (f *fakeTracer) vanish(cookie uint64) tracer.ConnectionStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := tracer.ConnKey{Cookie: cookie}
	c := f.active[k]
	delete(f.active, k)
	return c
}

// close closes an active connection; drop removes one without a close.
func (f *fakeTracer) close(cookie uint64) { f.leave(cookie, true) }
func (f *fakeTracer) drop(cookie uint64)  { f.leave(cookie, false) }

func (f *fakeTracer) leave(cookie uint64, closed bool) {
	f.mu.Lock()
	k := tracer.ConnKey{Cookie: cookie}
	c, ok := f.active[k]
	if !ok {
		f.mu.Unlock()
		panic(fmt.Sprintf("no active connection %d", cookie))
	}
	delete(f.active, k)
	c.Closed = closed
	c.LastUpdateEpoch = f.tick()
	st := f.st
	f.mu.Unlock()
	if st != nil && st.Clients() > 0 {
		st.Closed([]tracer.ConnectionStats{c})
	}
}

// hold closes an active connection as the tracer does when its NAT is not
// known yet: it leaves the snapshots' connections for their Leaving, and
// reaches the state at release.
func (f *fakeTracer) hold(cookie uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := tracer.ConnKey{Cookie: cookie}
	c := f.active[k]
	delete(f.active, k)
	c.Closed = true
	c.LastUpdateEpoch = f.tick()
	f.held[k] = c
}

// release gives a held connection to the state, with its NAT (may be nil).
func (f *fakeTracer) release(cookie uint64, nat *tracer.IPTranslation) {
	f.mu.Lock()
	k := tracer.ConnKey{Cookie: cookie}
	c := f.held[k]
	delete(f.held, k)
	c.IPTranslation = nat
	st := f.st
	f.mu.Unlock()
	st.Closed([]tracer.ConnectionStats{c})
}

func (f *fakeTracer) Snapshot() (*tracer.Snapshot, error) {
	f.mu.Lock()
	f.reads++
	if f.err != nil {
		f.mu.Unlock()
		return nil, f.err
	}
	var conns []*tracer.ConnectionStats
	for _, k := range slices.SortedFunc(maps.Keys(f.active), func(a, b tracer.ConnKey) int { return int(a.Cookie) - int(b.Cookie) }) {
		c := f.active[k]
		conns = append(conns, &c)
	}
	// As the tracer's, the snapshot's connections are released: poisoned
	// then, so that a use after the release counts garbage.
	snap := tracer.NewSnapshot(conns, func() {
		f.mu.Lock()
		f.released++
		f.mu.Unlock()
		for _, c := range conns {
			c.Monotonic.SentBytes, c.Monotonic.RecvBytes = 1<<60, 1<<60
		}
	})
	snap.ReadStart = f.tick()
	for _, c := range f.held {
		snap.Leaving = append(snap.Leaving, c)
	}
	during := f.during
	f.mu.Unlock()
	if during != nil {
		during()
	}
	f.mu.Lock()
	snap.ReadEnd = f.tick()
	f.mu.Unlock()
	return snap, nil
}

func (f *fakeTracer) KTime() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tick()
}

// perConn labels every connection on its own (its cookie): the tests see
// each connection's counters.
type perConn struct{}

func (perConn) Key(c *tracer.ConnectionStats) tracer.ConnKey { return c.Key }
func (perConn) Values(k tracer.ConnKey) []string             { return []string{fmt.Sprint(k.Cookie)} }
func (perConn) Overflow() []string                           { return []string{"overflow"} }
func (perConn) Text(v []string) string                       { return v[0] }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newTestState(f *fakeTracer, cfg Config) *State[tracer.ConnKey] {
	if cfg.MaxClients == 0 {
		cfg.MaxClients = 16
	}
	if cfg.ClientExpiry == 0 {
		cfg.ClientExpiry = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0 }
	}
	st := New[tracer.ConnKey](f, perConn{}, cfg)
	f.st = st
	return st
}

// view is a scrape by cookie ("overflow" for the overflow series).
type view map[string]Series

func scrape(t *testing.T, st *State[tracer.ConnKey], id string) view {
	t.Helper()
	v, err := st.Scrape(id, t0)
	if err != nil {
		t.Fatalf("Scrape(%q): %v", id, err)
	}
	out := view{}
	for _, s := range v.Series {
		out[s.Labels[0]] = s
	}
	return out
}

// sums are the counters a test checks.
type sums struct{ Sent, Recv, Opened, Closed, Failed uint64 }

func (v view) of(cookie uint64) sums {
	s := v[fmt.Sprint(cookie)]
	return sums{s.SentBytes, s.RecvBytes, s.Opened, s.Closed, s.Failed}
}
