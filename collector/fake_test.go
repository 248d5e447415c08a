package collector

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/conntrace/conntrace_exporter/cgroup"
	"github.com/conntrace/conntrace_exporter/tracer"
)

// fakeSource is a tracer whose connections the test sets: a snapshot lists
// the active ones (their Monotinic* values), and a connection that closes
// (or is dropped without a close) goes to the sink at once, as the
// tracer's drain gives it. The per-client rules are the real state's
// (netstate), under the collector as in production.
type fakeSource struct {
	mu     sync.Mutex
	active map[tracer.ConnKey]tracer.ConnectionStats
	sink   tracer.Sink
	err    error // returned by every Snapshot when set
	stats  tracer.Stats
	calls  int
	ktime  uint64
	names  map[netip.Addr][]string
	// listeners and listenErr are what Listeners returns.
	listeners []tracer.ListenerStats
	// portResets: nil where the kernel does not show them.
	portResets []tracer.PortResets
	listenErr  error
	// cgroups are the names Cgroup gives.
	cgroups map[uint64]cgroup.Info
	// The Snapshot called while blockID's scrape... see block: Snapshot
	// signals entered, then waits until block is closed, when block is set.
	block, entered chan struct{}
}

func newFakeSource() *fakeSource {
	return &fakeSource{active: make(map[tracer.ConnKey]tracer.ConnectionStats), ktime: 1000}
}

// set adds or updates an active connection (its Monotonic values).
func (f *fakeSource) set(c tracer.ConnectionStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ktime++
	if c.StartEpoch == 0 {
		c.StartEpoch = f.ktime
	}
	c.LastUpdateEpoch = f.ktime
	f.active[c.Key] = c
}

// update changes an active connection in place.
func (f *fakeSource) update(k tracer.ConnKey, fn func(c *tracer.ConnectionStats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.active[k]
	if !ok {
		panic(fmt.Sprintf("no active connection %s", k))
	}
	fn(&c)
	f.ktime++
	c.LastUpdateEpoch = f.ktime
	f.active[k] = c
}

// close closes an active connection: the sink gets it.
func (f *fakeSource) close(k tracer.ConnKey) { f.leave(k, true) }

// drop removes an active connection without a close record (as when the
// record is lost and the tracer times the connection out): the sink gets
// its last values.
func (f *fakeSource) drop(k tracer.ConnKey) { f.leave(k, false) }

func (f *fakeSource) leave(k tracer.ConnKey, closed bool) {
	f.mu.Lock()
	c, ok := f.active[k]
	if !ok {
		f.mu.Unlock()
		panic(fmt.Sprintf("no active connection %s", k))
	}
	delete(f.active, k)
	f.ktime++
	c.Closed = closed
	c.LastUpdateEpoch = f.ktime
	sink := f.sink
	f.mu.Unlock()
	if sink != nil && sink.Clients() > 0 {
		sink.Closed([]tracer.ConnectionStats{c})
	}
}

func (f *fakeSource) Snapshot() (*tracer.Snapshot, error) {
	if f.block != nil {
		select {
		case f.entered <- struct{}{}:
		default:
		}
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	keys := slices.SortedFunc(maps.Keys(f.active), func(a, b tracer.ConnKey) int {
		return int(a.Cookie) - int(b.Cookie)
	})
	f.ktime++
	snap := &tracer.Snapshot{ReadStart: f.ktime}
	for _, k := range keys {
		c := f.active[k]
		snap.Conns = append(snap.Conns, &c)
	}
	f.ktime++
	snap.ReadEnd = f.ktime
	return snap, nil
}

func (f *fakeSource) KTime() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ktime++
	return f.ktime
}

func (f *fakeSource) SetSink(s tracer.Sink) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sink = s
}

func (f *fakeSource) Names(addrs []netip.Addr) map[netip.Addr][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[netip.Addr][]string{}
	for _, a := range addrs {
		if n, ok := f.names[a]; ok {
			out[a] = n
		}
	}
	return out
}

func (f *fakeSource) Listeners() ([]tracer.ListenerStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.listeners), f.listenErr
}

func (f *fakeSource) PortResets() ([]tracer.PortResets, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.portResets), f.portResets != nil, nil
}

// JiffyMicros: HZ=250, Debian's.
func (f *fakeSource) JiffyMicros() uint64 { return 4000 }

// Cgroup names the ids of cgroups (set by the test).
func (f *fakeSource) Cgroup(id uint64) (cgroup.Info, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, ok := f.cgroups[id]
	return info, ok
}

func (f *fakeSource) Stats() tracer.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	if s.Lost == nil {
		s.Lost = map[string]uint64{}
	}
	s.Lost = maps.Clone(s.Lost)
	return s
}

var errFake = errors.New("fake failure")
