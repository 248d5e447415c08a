package tracer

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testConfig() *Config {
	cfg := NewDefaultConfig()
	cfg.ClientStateExpiry = time.Minute
	cfg.MaxClosedConnectionsBuffered = 1000
	cfg.MaxConnectionsStateBuffered = 1000
	cfg.MaxClients = 4
	return cfg
}

// mkConn returns an established TCP connection with the given cookie and totals.
func mkConn(cookie uint64, sent, recv uint64) ConnectionStats {
	return ConnectionStats{
		Source:             netip.MustParseAddr("10.0.0.1"),
		Dest:               netip.MustParseAddr("10.0.0.2"),
		SPort:              40000,
		DPort:              443,
		Key:                ConnKey{Cookie: cookie},
		MonotonicSentBytes: sent,
		MonotonicRecvBytes: recv,
		Established:        true,
		Direction:          OUTGOING,
	}
}

func mkClosed(cookie uint64, sent, recv uint64, epoch uint64) ConnectionStats {
	c := mkConn(cookie, sent, recv)
	c.Closed = true
	c.LastUpdateEpoch = epoch
	return c
}

// call runs Connections and fails the test on error; it returns the
// connections by key and newClient.
func call(t *testing.T, ns NetworkState, id string, now time.Time, active ...ConnectionStats) (map[ConnKey]ConnectionStats, bool) {
	t.Helper()
	conns, newClient, err := ns.Connections(id, now, 0, active)
	if err != nil {
		t.Fatalf("Connections(%q): %v", id, err)
	}
	m := make(map[ConnKey]ConnectionStats, len(conns))
	for _, c := range conns {
		if _, dup := m[c.Key]; dup {
			t.Fatalf("Connections(%q) returned %s twice", id, c.Key)
		}
		m[c.Key] = c
	}
	return m, newClient
}

func key(cookie uint64) ConnKey { return ConnKey{Cookie: cookie} }

// last is the Last* fields of a connection, to compare in one go.
type last struct {
	Sent, Recv                          uint64
	Retransmits, Opened, Closed, Failed uint32
	RTT                                 RTTHistogram
}

func lastOf(c ConnectionStats) last {
	return last{c.LastSentBytes, c.LastRecvBytes, c.LastRetransmits, c.LastOpened, c.LastClosed, c.LastFailed, c.LastRTT}
}

func telemetryOf(t *testing.T, ns NetworkState) map[string]uint64 {
	t.Helper()
	tel, ok := ns.GetStats()["telemetry"].(map[string]uint64)
	if !ok {
		t.Fatalf("GetStats()[telemetry] is %T", ns.GetStats()["telemetry"])
	}
	return tel
}

func TestFirstCallOfClientHasZeroDeltas(t *testing.T) {
	ns := NewNetworkState(testConfig())
	a := mkConn(1, 100, 200)
	a.MonotonicRetransmits = 3
	a.MonotonicRTT.Buckets[5] = 7
	a.MonotonicRTT.SumMicros = 1000
	a.LastSentBytes, a.LastOpened, a.LastRTT.Buckets[5] = 99, 1, 2 // stale values from the caller
	b := mkConn(2, 5, 6)

	got, newClient := call(t, ns, "A", t0, a, b)
	if !newClient {
		t.Error("first call: newClient = false, want true")
	}
	if len(got) != 2 {
		t.Fatalf("first call returned %d connections, want 2", len(got))
	}
	for k, c := range got {
		if l := lastOf(c); l != (last{}) {
			t.Errorf("%s: Last* = %+v, want all zero", k, l)
		}
		if c.MonotonicOpened != 1 {
			t.Errorf("%s: MonotonicOpened = %d, want 1 (SetLifecycle)", k, c.MonotonicOpened)
		}
	}
	if got[key(1)].MonotonicSentBytes != 100 || got[key(1)].MonotonicRTT.Buckets[5] != 7 {
		t.Errorf("monotonic values changed: %+v", got[key(1)])
	}

	// The second call is not new, and sees no change.
	got, newClient = call(t, ns, "A", t0.Add(time.Second), mkConn(1, 100, 200), mkConn(2, 5, 6))
	if newClient {
		t.Error("second call: newClient = true, want false")
	}
	if got[key(1)].LastSentBytes != 0 || got[key(2)].LastRecvBytes != 0 {
		t.Errorf("second call without traffic: deltas %+v %+v", lastOf(got[key(1)]), lastOf(got[key(2)]))
	}
}

func TestDeltaBetweenCalls(t *testing.T) {
	ns := NewNetworkState(testConfig())
	c := mkConn(1, 100, 50)
	c.MonotonicRetransmits = 1
	call(t, ns, "A", t0, c)

	c = mkConn(1, 250, 80)
	c.MonotonicRetransmits = 3
	got, _ := call(t, ns, "A", t0.Add(time.Second), c)
	want := last{Sent: 150, Recv: 30, Retransmits: 2}
	if l := lastOf(got[key(1)]); l != want {
		t.Errorf("second call: Last = %+v, want %+v", l, want)
	}

	got, _ = call(t, ns, "A", t0.Add(2*time.Second), c)
	if l := lastOf(got[key(1)]); l != (last{}) {
		t.Errorf("third call without traffic: Last = %+v, want zero", l)
	}
	if got[key(1)].MonotonicSentBytes != 250 {
		t.Errorf("MonotonicSentBytes = %d, want 250", got[key(1)].MonotonicSentBytes)
	}
}

func TestClosedConnectionSeenOnceByEachClient(t *testing.T) {
	ns := NewNetworkState(testConfig())
	call(t, ns, "A", t0, mkConn(1, 10, 1))
	call(t, ns, "B", t0, mkConn(1, 10, 1))

	ns.StoreClosedConnection(mkClosed(1, 30, 4, 100))

	for _, id := range []string{"A", "B"} {
		got, _ := call(t, ns, id, t0.Add(time.Second))
		c, ok := got[key(1)]
		if !ok || len(got) != 1 {
			t.Fatalf("%s: got %d connections (closed one present: %v), want only the closed one", id, len(got), ok)
		}
		if want := (last{Sent: 20, Recv: 3, Closed: 1}); lastOf(c) != want {
			t.Errorf("%s: Last = %+v, want %+v", id, lastOf(c), want)
		}
		got, _ = call(t, ns, id, t0.Add(2*time.Second))
		if len(got) != 0 {
			t.Errorf("%s: closed connection returned again: %v", id, got)
		}
	}
}

// sim is a fake kernel: connections with monotonic counters that open,
// carry traffic and close, and the totals each registered client must see.
type sim struct {
	t        *testing.T
	ns       NetworkState
	rng      *rand.Rand
	now      time.Time
	epoch    uint64
	next     uint64
	live     map[ConnKey]*ConnectionStats
	expected map[string]*totals // what each client must have counted
	seen     map[string]*totals // what each client counted
}

type totals struct {
	sent, recv, retrans, opened, closed, failed, rttSamples, rttSum uint64
}

func newSim(t *testing.T, ns NetworkState, seed int64) *sim {
	return &sim{t: t, ns: ns, rng: rand.New(rand.NewSource(seed)), now: t0,
		live: map[ConnKey]*ConnectionStats{}, expected: map[string]*totals{}, seen: map[string]*totals{}}
}

func (s *sim) forClients(f func(*totals)) {
	for _, e := range s.expected {
		f(e)
	}
}

func (s *sim) open(established, preexisting bool) {
	s.next++
	s.epoch++
	c := mkConn(s.next, 0, 0)
	c.Established, c.Preexisting = established, preexisting
	c.LastUpdateEpoch = s.epoch
	s.live[c.Key] = &c
	if established && !preexisting {
		s.forClients(func(e *totals) { e.opened++ })
	}
}

func (s *sim) pick() *ConnectionStats {
	if len(s.live) == 0 {
		return nil
	}
	keys := make([]ConnKey, 0, len(s.live))
	for k := range s.live {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Cookie < keys[j].Cookie })
	return s.live[keys[s.rng.Intn(len(keys))]]
}

func (s *sim) step() {
	s.epoch++
	switch r := s.rng.Intn(10); {
	case r == 0:
		s.open(s.rng.Intn(4) != 0, false)
	case r == 1:
		if c := s.pick(); c != nil {
			c.LastUpdateEpoch = s.epoch
			delete(s.live, c.Key)
			c.Closed = true
			switch {
			case !c.Established:
				s.forClients(func(e *totals) { e.failed++ })
			default:
				s.forClients(func(e *totals) { e.closed++ })
			}
			s.ns.StoreClosedConnection(*c)
		}
	case r == 2:
		if c := s.pick(); c != nil && !c.Established {
			c.Established = true
			s.forClients(func(e *totals) { e.opened++ })
		}
	default:
		if c := s.pick(); c != nil && c.Established {
			sent, recv := uint64(s.rng.Intn(1000)), uint64(s.rng.Intn(1000))
			retr := uint32(s.rng.Intn(2))
			rtt := uint64(s.rng.Intn(5000))
			c.MonotonicSentBytes += sent
			c.MonotonicRecvBytes += recv
			c.MonotonicRetransmits += retr
			c.MonotonicRTT.Buckets[s.rng.Intn(NumRTTBuckets)]++
			c.MonotonicRTT.SumMicros += rtt
			c.LastUpdateEpoch = s.epoch
			s.forClients(func(e *totals) {
				e.sent += sent
				e.recv += recv
				e.retrans += uint64(retr)
				e.rttSamples++
				e.rttSum += rtt
			})
		}
	}
}

func (s *sim) activeSet() []ConnectionStats {
	out := make([]ConnectionStats, 0, len(s.live))
	for _, c := range s.live {
		out = append(out, *c)
	}
	s.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (s *sim) call(id string) {
	s.t.Helper()
	s.now = s.now.Add(time.Second)
	conns, newClient, err := s.ns.Connections(id, s.now, 0, s.activeSet())
	if err != nil {
		s.t.Fatalf("Connections(%q): %v", id, err)
	}
	if _, known := s.expected[id]; !known {
		if !newClient {
			s.t.Fatalf("%s: first call has newClient = false", id)
		}
		s.expected[id] = &totals{}
		s.seen[id] = &totals{}
	}
	got := s.seen[id]
	for _, c := range conns {
		got.sent += c.LastSentBytes
		got.recv += c.LastRecvBytes
		got.retrans += uint64(c.LastRetransmits)
		got.opened += uint64(c.LastOpened)
		got.closed += uint64(c.LastClosed)
		got.failed += uint64(c.LastFailed)
		got.rttSamples += c.LastRTT.Count()
		got.rttSum += c.LastRTT.SumMicros
	}
}

func TestTwoClientsInterleavedSeeExactTotals(t *testing.T) {
	ns := NewNetworkState(testConfig())
	s := newSim(t, ns, 1)
	for i := 0; i < 20; i++ {
		s.open(true, true) // open before the tracer started
	}
	for i := 0; i < 50; i++ {
		s.step()
	}
	s.call("A")
	for i := 0; i < 3000; i++ {
		s.step()
		switch {
		case i == 700:
			s.call("B") // registers late
		case s.rng.Intn(40) == 0:
			s.call("A")
		case i > 700 && s.rng.Intn(25) == 0:
			s.call("B")
		}
	}
	s.call("A")
	s.call("B")
	for _, id := range []string{"A", "B"} {
		if *s.seen[id] != *s.expected[id] {
			t.Errorf("client %s counted %+v, want %+v", id, *s.seen[id], *s.expected[id])
		}
	}
	if *s.expected["A"] == *s.expected["B"] {
		t.Errorf("A and B expect the same totals %+v: B did not register late", *s.expected["A"])
	}
	if e := s.expected["B"]; e.sent == 0 || e.opened == 0 || e.closed == 0 || e.failed == 0 {
		t.Errorf("the simulation did not exercise every counter: %+v", *e)
	}
	if tel := telemetryOf(t, ns); tel["stats_resets"] != 0 || tel["conn_dropped"] != 0 || tel["closed_conn_dropped"] != 0 {
		t.Errorf("telemetry %v, want no reset and no drop", tel)
	}
}

func TestLateClientSeesZeroThenIncrements(t *testing.T) {
	ns := NewNetworkState(testConfig())
	call(t, ns, "A", t0, mkConn(1, 100, 100))
	call(t, ns, "A", t0.Add(time.Second), mkConn(1, 300, 100))

	got, newClient := call(t, ns, "B", t0.Add(2*time.Second), mkConn(1, 500, 100))
	if !newClient || lastOf(got[key(1)]) != (last{}) {
		t.Fatalf("late client's first call: newClient=%v Last=%+v, want true and zero", newClient, lastOf(got[key(1)]))
	}
	got, newClient = call(t, ns, "B", t0.Add(3*time.Second), mkConn(1, 540, 110))
	if newClient {
		t.Error("late client's second call: newClient = true")
	}
	if want := (last{Sent: 40, Recv: 10}); lastOf(got[key(1)]) != want {
		t.Errorf("late client's second call: Last = %+v, want %+v", lastOf(got[key(1)]), want)
	}
	got, _ = call(t, ns, "A", t0.Add(4*time.Second), mkConn(1, 540, 110))
	if want := (last{Sent: 240, Recv: 10}); lastOf(got[key(1)]) != want {
		t.Errorf("A, unaffected by B: Last = %+v, want %+v", lastOf(got[key(1)]), want)
	}
}

func TestClosedBeforeClientExistedIsNotSeen(t *testing.T) {
	ns := NewNetworkState(testConfig())
	ns.StoreClosedConnection(mkClosed(1, 10, 10, 1)) // before any client
	call(t, ns, "A", t0)
	ns.StoreClosedConnection(mkClosed(2, 20, 20, 2)) // A exists, B not yet

	got, _ := call(t, ns, "B", t0.Add(time.Second))
	if len(got) != 0 {
		t.Errorf("B's first call returned %v, want nothing", got)
	}
	got, _ = call(t, ns, "B", t0.Add(2*time.Second))
	if len(got) != 0 {
		t.Errorf("B's second call returned %v, want nothing", got)
	}
	got, _ = call(t, ns, "A", t0.Add(3*time.Second))
	if _, ok := got[key(2)]; !ok || len(got) != 1 {
		t.Errorf("A returned %v, want only connection 2", got)
	}
	if got[key(2)].LastSentBytes != 20 {
		t.Errorf("A: LastSentBytes = %d, want 20", got[key(2)].LastSentBytes)
	}
}

func TestClosedConnectionWinsOverStaleActive(t *testing.T) {
	ns := NewNetworkState(testConfig())
	call(t, ns, "A", t0, mkConn(1, 10, 10), mkConn(2, 1, 1))
	ns.StoreClosedConnection(mkClosed(1, 50, 60, 200))

	stale := mkConn(1, 40, 40) // read from the kernel before the close
	stale.LastUpdateEpoch = 100
	got, _ := call(t, ns, "A", t0.Add(time.Second), stale, mkConn(2, 1, 1))
	if len(got) != 2 {
		t.Fatalf("got %d connections, want 2", len(got))
	}
	c := got[key(1)]
	if !c.Closed || c.MonotonicSentBytes != 50 {
		t.Errorf("connection 1 is the stale active one: %+v", c)
	}
	if want := (last{Sent: 40, Recv: 50, Closed: 1}); lastOf(c) != want {
		t.Errorf("Last = %+v, want %+v", lastOf(c), want)
	}
	if _, ok := ns.DumpState("A")[key(1).String()]; ok {
		t.Error("the closed connection's baseline was kept")
	}
	got, _ = call(t, ns, "A", t0.Add(2*time.Second), mkConn(2, 1, 1))
	if _, ok := got[key(1)]; ok {
		t.Error("the closed connection was returned twice")
	}

	// The same for a connection opened since the last call (no baseline).
	ns.StoreClosedConnection(mkClosed(5, 90, 9, 300))
	got, _ = call(t, ns, "A", t0.Add(3*time.Second), mkConn(5, 80, 8), mkConn(2, 1, 1))
	if len(got) != 2 {
		t.Fatalf("new connection: got %d connections, want 2", len(got))
	}
	if c := got[key(5)]; !c.Closed || lastOf(c) != (last{Sent: 90, Recv: 9, Opened: 1, Closed: 1}) {
		t.Errorf("new connection: Closed=%v Last = %+v, want the closed record counted whole", c.Closed, lastOf(c))
	}
	if n := len(ns.DumpState("A")); n != 1 {
		t.Errorf("%d baselines, want 1 (connection 2 only)", n)
	}
}

func TestOpenedAndClosedBetweenCallsCountedOnce(t *testing.T) {
	ns := NewNetworkState(testConfig())
	call(t, ns, "A", t0)

	// Opened and closed between two calls: never seen active.
	ns.StoreClosedConnection(mkClosed(1, 70, 7, 1))
	got, _ := call(t, ns, "A", t0.Add(time.Second))
	if want := (last{Sent: 70, Recv: 7, Opened: 1, Closed: 1}); lastOf(got[key(1)]) != want {
		t.Errorf("short connection: Last = %+v, want %+v", lastOf(got[key(1)]), want)
	}

	// Opened between calls, seen active twice, then closed.
	var sum last
	add := func(m map[ConnKey]ConnectionStats) {
		for _, c := range m {
			sum.Sent += c.LastSentBytes
			sum.Opened += c.LastOpened
			sum.Closed += c.LastClosed
		}
	}
	got, _ = call(t, ns, "A", t0.Add(2*time.Second), mkConn(2, 5, 0))
	add(got)
	got, _ = call(t, ns, "A", t0.Add(3*time.Second), mkConn(2, 9, 0))
	add(got)
	ns.StoreClosedConnection(mkClosed(2, 12, 0, 5))
	got, _ = call(t, ns, "A", t0.Add(4*time.Second))
	add(got)
	got, _ = call(t, ns, "A", t0.Add(5*time.Second))
	add(got)
	if want := (last{Sent: 12, Opened: 1, Closed: 1}); sum != want {
		t.Errorf("long connection: summed Last = %+v, want %+v", sum, want)
	}
}

func TestCounterUnderflowResetsBaseline(t *testing.T) {
	ns := NewNetworkState(testConfig())
	call(t, ns, "A", t0, mkConn(1, 100, 100))
	got, _ := call(t, ns, "A", t0.Add(time.Second), mkConn(1, 30, 150))
	if want := (last{Sent: 30, Recv: 50}); lastOf(got[key(1)]) != want {
		t.Errorf("after underflow: Last = %+v, want %+v (the reset field whole, the other a delta)", lastOf(got[key(1)]), want)
	}
	if n := telemetryOf(t, ns)["stats_resets"]; n != 1 {
		t.Errorf("stats_resets = %d, want 1", n)
	}
	got, _ = call(t, ns, "A", t0.Add(2*time.Second), mkConn(1, 40, 160))
	if want := (last{Sent: 10, Recv: 10}); lastOf(got[key(1)]) != want {
		t.Errorf("after the reset: Last = %+v, want %+v", lastOf(got[key(1)]), want)
	}
	if n := telemetryOf(t, ns)["stats_resets"]; n != 1 {
		t.Errorf("stats_resets = %d, want still 1", n)
	}
}

func TestClientExpiry(t *testing.T) {
	ns := NewNetworkState(testConfig()) // expiry: 1 minute
	call(t, ns, "A", t0)
	ns.RemoveExpiredClients(t0.Add(time.Minute))
	if n := ns.Clients(); n != 1 {
		t.Fatalf("at exactly the expiry: %d clients, want 1", n)
	}
	ns.RemoveExpiredClients(t0.Add(time.Minute + time.Second))
	if n := ns.Clients(); n != 0 {
		t.Fatalf("after the expiry: %d clients, want 0", n)
	}

	// Connections expires the other clients itself.
	call(t, ns, "A", t0, mkConn(1, 10, 10))
	call(t, ns, "B", t0.Add(30*time.Second))
	call(t, ns, "B", t0.Add(90*time.Second))
	if n := ns.Clients(); n != 1 {
		t.Errorf("after B's call past A's expiry: %d clients, want 1", n)
	}
	got, newClient := call(t, ns, "A", t0.Add(91*time.Second), mkConn(1, 50, 10))
	if !newClient || got[key(1)].LastSentBytes != 0 {
		t.Errorf("expired client came back: newClient=%v LastSentBytes=%d, want true and 0", newClient, got[key(1)].LastSentBytes)
	}
}

func TestRemoveClient(t *testing.T) {
	ns := NewNetworkState(testConfig())
	call(t, ns, "A", t0, mkConn(1, 10, 10))
	call(t, ns, "B", t0, mkConn(1, 10, 10))
	ns.StoreClosedConnection(mkClosed(1, 20, 20, 1))
	ns.RemoveClient("A")
	ns.RemoveClient("unknown")
	if n := ns.Clients(); n != 1 {
		t.Fatalf("%d clients, want 1", n)
	}
	got, newClient := call(t, ns, "A", t0.Add(time.Second))
	if !newClient || len(got) != 0 {
		t.Errorf("removed client: newClient=%v, %d connections, want true and none", newClient, len(got))
	}
	got, newClient = call(t, ns, "B", t0.Add(time.Second))
	if newClient || got[key(1)].LastSentBytes != 10 {
		t.Errorf("other client: newClient=%v, LastSentBytes=%d, want false and 10", newClient, got[key(1)].LastSentBytes)
	}
}

func TestTooManyClientsRejectedAndCounted(t *testing.T) {
	cfg := testConfig()
	cfg.MaxClients = 2
	ns := NewNetworkState(cfg)
	call(t, ns, "A", t0, mkConn(1, 10, 10))
	call(t, ns, "B", t0.Add(29*time.Second))
	call(t, ns, "A", t0.Add(30*time.Second), mkConn(1, 10, 10)) // both came back: never evicted
	call(t, ns, "B", t0.Add(30*time.Second))
	ns.StoreClosedConnection(mkClosed(2, 5, 5, 1))

	conns, newClient, err := ns.Connections("C", t0.Add(31*time.Second), 0, []ConnectionStats{mkConn(1, 20, 20)})
	if !errors.Is(err, ErrTooManyClients) {
		t.Fatalf("third client: err = %v, want ErrTooManyClients", err)
	}
	if !strings.Contains(err.Error(), "2 held") {
		t.Errorf("error %q does not name the limit", err)
	}
	if conns != nil || newClient {
		t.Errorf("rejected call returned %d connections, newClient=%v", len(conns), newClient)
	}
	if n := ns.Lost()[LostClientRejected]; n != 1 {
		t.Errorf("Lost()[%s] = %d, want 1", LostClientRejected, n)
	}
	if n := telemetryOf(t, ns)["clients_rejected"]; n != 1 {
		t.Errorf("clients_rejected = %d, want 1", n)
	}
	if n := ns.Clients(); n != 2 {
		t.Errorf("%d clients, want 2", n)
	}
	// Nothing else changed: A still has its baseline and its closed connection.
	got, newClient := call(t, ns, "A", t0.Add(32*time.Second), mkConn(1, 20, 20))
	if newClient || got[key(1)].LastSentBytes != 10 || got[key(2)].LastSentBytes != 5 {
		t.Errorf("A after the rejection: newClient=%v, %v", newClient, got)
	}
	// Once B expires, C gets in.
	if _, newClient := call(t, ns, "C", t0.Add(91*time.Second)); !newClient {
		t.Error("C after B's expiry: newClient = false")
	}
	if n := ns.Lost()[LostClientRejected]; n != 1 {
		t.Errorf("Lost()[%s] = %d after the accepted call, want 1", LostClientRejected, n)
	}
}

// One-off requests with a new client_id each cannot lock a Prometheus out,
// nor keep a new one from its deltas (issue 11.15: 15 of them filled the 16
// slots, and a restarted Prometheus got 503s for 10 minutes; review: then
// they could evict a new Prometheus before its second scrape). One scraper
// address holds at most its share of the slots (max(4, MaxClients/4)): past
// it, its new clients take the slots of its own clients that never came
// back. A new client of another address takes the slot of a client that
// never came back only after oneShotGrace; a client that came back keeps
// its slot.
func TestOneShotClientsEvictedForNewOnes(t *testing.T) {
	cfg := testConfig()
	cfg.MaxClients = 16
	cfg.ClientStateExpiry = time.Hour
	ns := NewNetworkState(cfg)
	call(t, ns, "prometheus@10.1.0.1", t0, mkConn(1, 10, 10))
	call(t, ns, "prometheus@10.1.0.1", t0.Add(15*time.Second), mkConn(1, 20, 10))
	for i := range 30 { // a flood of one-off ids from one address
		call(t, ns, fmt.Sprintf("x%d@10.9.9.9", i), t0.Add(16*time.Second))
	}
	if n, want := ns.Lost()[LostClientEvicted], uint64(30-4); n != want {
		t.Errorf("Lost()[%s] = %d, want %d (30 one-off clients in their address's 4 slots)", LostClientEvicted, n, want)
	}
	if n := ns.Clients(); n != 5 {
		t.Errorf("%d clients held, want 5: the Prometheus and the flood's 4", n)
	}
	// Many addresses, one request each: they fill the slots, and a new
	// Prometheus must wait until they are older than the grace...
	for i := range 11 {
		call(t, ns, fmt.Sprintf("y@10.8.0.%d", i), t0.Add(20*time.Second))
	}
	if _, _, err := ns.Connections("prometheus-2@10.1.0.2", t0.Add(30*time.Second), 0, nil); !errors.Is(err, ErrTooManyClients) {
		t.Errorf("a new client while every one-shot slot is young: err %v, want ErrTooManyClients", err)
	}
	// ... then it takes the oldest one-shot's slot, and once it came back
	// it keeps its own, whatever comes.
	now := t0.Add(20*time.Second + oneShotGrace + time.Second)
	if _, newClient := call(t, ns, "prometheus-2@10.1.0.2", now); !newClient {
		t.Error("new Prometheus after the grace: newClient = false")
	}
	call(t, ns, "prometheus-2@10.1.0.2", now.Add(15*time.Second))
	for i := range 40 {
		ns.Connections(fmt.Sprintf("z@10.7.0.%d", i), now.Add(oneShotGrace+time.Minute), 0, nil)
	}
	for _, id := range []string{"prometheus@10.1.0.1", "prometheus-2@10.1.0.2"} {
		if !ns.HasClient(id) {
			t.Errorf("%s, which came back, was evicted", id)
		}
	}
	got, newClient := call(t, ns, "prometheus@10.1.0.1", now.Add(oneShotGrace+time.Minute), mkConn(1, 35, 10))
	if newClient || got[key(1)].LastSentBytes != 15 {
		t.Errorf("the Prometheus that came back: newClient=%v, LastSentBytes=%d, want false 15", newClient, got[key(1)].LastSentBytes)
	}
}

// Closed records are held once for all clients, at most
// MaxClosedConnectionsBuffered of them: past it the oldest goes, counted
// once for each client that had not taken it.
func TestClosedBufferOverflowCounted(t *testing.T) {
	cfg := testConfig()
	cfg.MaxClosedConnectionsBuffered = 2
	ns := NewNetworkState(cfg)
	call(t, ns, "A", t0)
	call(t, ns, "B", t0)
	ns.StoreClosedConnection(mkClosed(1, 1, 0, 1))
	ns.StoreClosedConnection(mkClosed(2, 2, 0, 2))
	ns.StoreClosedConnection(mkClosed(3, 3, 0, 3)) // 1 goes, for A and B
	if n := ns.Lost()[LostClosedBufferFull]; n != 2 {
		t.Errorf("Lost()[%s] = %d, want 2 (one per client)", LostClosedBufferFull, n)
	}
	if n := telemetryOf(t, ns)["closed_conn_dropped"]; n != 2 {
		t.Errorf("closed_conn_dropped = %d, want 2", n)
	}
	got, _ := call(t, ns, "A", t0.Add(time.Second))
	if len(got) != 2 || got[key(2)].LastSentBytes != 2 || got[key(3)].LastSentBytes != 3 {
		t.Errorf("A got %v, want connections 2 and 3", got)
	}
	ns.StoreClosedConnection(mkClosed(4, 4, 0, 4)) // 2 goes: B had not taken it
	if n := ns.Lost()[LostClosedBufferFull]; n != 3 {
		t.Errorf("Lost()[%s] = %d, want 3 (B lost 2; A had taken it)", LostClosedBufferFull, n)
	}
	got, _ = call(t, ns, "A", t0.Add(2*time.Second))
	if len(got) != 1 || got[key(4)].LastSentBytes != 4 {
		t.Errorf("A got %v, want connection 4", got)
	}
	got, _ = call(t, ns, "B", t0.Add(2*time.Second))
	if len(got) != 2 || got[key(3)].LastSentBytes != 3 || got[key(4)].LastSentBytes != 4 {
		t.Errorf("B got %v, want connections 3 and 4", got)
	}
	if n := ns.GetStats()["closed_records"]; n != 0 {
		t.Errorf("%v closed records held after every client took them, want 0", n)
	}
}

// Each closed record is held once, whatever the number of clients (issue
// 11.15: each client held its own copy, ~26 MiB per slot at the limit).
func TestClosedRecordsHeldOnceForAllClients(t *testing.T) {
	cfg := testConfig()
	cfg.MaxClients = 16
	ns := NewNetworkState(cfg)
	for i := range 16 {
		call(t, ns, fmt.Sprint("client", i), t0)
	}
	for i := range 500 {
		ns.StoreClosedConnection(mkClosed(uint64(i+1), 1, 0, uint64(i+1)))
	}
	held := func() int { return len(ns.(*networkState).records()) }
	if n := held(); n != 500 {
		t.Errorf("%d records held for 16 clients of 500 closed connections, want 500", n)
	}
	for i := range 15 {
		call(t, ns, fmt.Sprint("client", i), t0.Add(time.Second))
	}
	if n := held(); n != 500 {
		t.Errorf("%d records held while one client has not taken them, want 500", n)
	}
	got, _ := call(t, ns, "client15", t0.Add(time.Second))
	if len(got) != 500 || held() != 0 {
		t.Errorf("the last client got %d records, %d still held; want 500, 0", len(got), held())
	}
}

func TestClosedDuplicateKeepsNewestRecord(t *testing.T) {
	ns := NewNetworkState(testConfig())
	call(t, ns, "A", t0)
	ns.StoreClosedConnection(mkClosed(1, 50, 0, 20))
	ns.StoreClosedConnection(mkClosed(1, 40, 0, 10)) // older, arrived late
	got, _ := call(t, ns, "A", t0.Add(time.Second))
	if got[key(1)].LastSentBytes != 50 {
		t.Errorf("LastSentBytes = %d, want 50 (the newer record)", got[key(1)].LastSentBytes)
	}
	if n := telemetryOf(t, ns)["unordered_conns"]; n != 1 {
		t.Errorf("unordered_conns = %d, want 1", n)
	}
}

// callAt is call with the kernel time at which the read of active ended.
func callAt(t *testing.T, ns NetworkState, id string, now time.Time, epoch uint64, active ...ConnectionStats) map[ConnKey]ConnectionStats {
	t.Helper()
	conns, _, err := ns.Connections(id, now, epoch, active)
	if err != nil {
		t.Fatalf("Connections(%q): %v", id, err)
	}
	m := make(map[ConnKey]ConnectionStats, len(conns))
	for _, c := range conns {
		m[c.Key] = c
	}
	return m
}

// startedAt is c with the kernel time the tracer first saw it.
func startedAt(c ConnectionStats, epoch uint64) ConnectionStats {
	c.StartEpoch = epoch
	return c
}

// A connection newer than the client that finds its baselines full is
// reported late but whole (once a slot frees), and the loss counter counts
// it once, not once per call (issue 11.4: it counted every call).
func TestClientStateFullCountedNotOvercounted(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnectionsStateBuffered = 2
	ns := NewNetworkState(cfg)
	lost := func() uint64 { return ns.Lost()[LostClientStateFull] }
	c1, c2 := startedAt(mkConn(1, 10, 0), 10), startedAt(mkConn(2, 10, 0), 20)

	callAt(t, ns, "A", t0, 100, c1, c2)
	c3 := startedAt(mkConn(3, 100, 0), 150)
	got := callAt(t, ns, "A", t0.Add(time.Second), 200, c1, c2, c3)
	if c := got[key(3)]; lastOf(c) != (last{}) || c.MonotonicSentBytes != 100 {
		t.Errorf("connection beyond the state limit: %+v, want reported with zero deltas", c)
	}
	if n := lost(); n != 1 {
		t.Errorf("Lost()[%s] = %d, want 1", LostClientStateFull, n)
	}
	got = callAt(t, ns, "A", t0.Add(2*time.Second), 300, c1, c2, c3)
	if c := got[key(3)]; c.LastSentBytes != 0 {
		t.Errorf("second call: LastSentBytes = %d, want 0 (not the whole total again)", c.LastSentBytes)
	}
	if n := lost(); n != 1 {
		t.Errorf("Lost()[%s] = %d after a second call without a slot, want still 1 (each connection once)", LostClientStateFull, n)
	}
	// Connection 1 is gone: its slot frees within the same call, and 3 is
	// reported whole: it started after the client, all of it is news.
	c3.MonotonicSentBytes = 130
	got = callAt(t, ns, "A", t0.Add(3*time.Second), 400, c2, c3)
	if c := got[key(3)]; c.LastSentBytes != 130 || c.LastOpened != 1 {
		t.Errorf("once a slot freed: LastSentBytes = %d LastOpened = %d, want 130 1", c.LastSentBytes, c.LastOpened)
	}
	c3.MonotonicSentBytes = 135
	got = callAt(t, ns, "A", t0.Add(4*time.Second), 500, c2, c3)
	if c := got[key(3)]; c.LastSentBytes != 5 {
		t.Errorf("with a baseline: LastSentBytes = %d, want 5", c.LastSentBytes)
	}
	if n := lost(); n != 1 {
		t.Errorf("Lost()[%s] = %d, want still 1", LostClientStateFull, n)
	}
}

// A connection older than the client that its first call could not take a
// baseline of is counted lost once; its traffic from before the baseline is
// never reported, neither when a slot frees nor at its close (issue 11.4:
// Last = Monotonic reported its traffic from before the client's first
// scrape).
func TestClientStateFullOlderConnectionNotOvercounted(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnectionsStateBuffered = 1
	ns := NewNetworkState(cfg)
	lost := func() uint64 { return ns.Lost()[LostClientStateFull] }
	c1, c2, c3 := startedAt(mkConn(1, 10, 0), 10), startedAt(mkConn(2, 1000, 0), 20), startedAt(mkConn(3, 500, 0), 30)

	callAt(t, ns, "A", t0, 100, c1, c2, c3) // 2 and 3 get no baseline
	if n := lost(); n != 2 {
		t.Fatalf("Lost()[%s] = %d after the first call, want 2", LostClientStateFull, n)
	}
	c2.MonotonicSentBytes = 1040
	got := callAt(t, ns, "A", t0.Add(time.Second), 200, c2, c3) // 1 gone: 2 takes its slot
	if c := got[key(2)]; lastOf(c) != (last{}) {
		t.Errorf("older connection on getting a baseline: %+v, want zero deltas (its 1000 bytes are from before the client)", lastOf(c))
	}
	c2.MonotonicSentBytes = 1070
	got = callAt(t, ns, "A", t0.Add(2*time.Second), 300, c2, c3)
	if c := got[key(2)]; c.LastSentBytes != 30 {
		t.Errorf("older connection with a baseline: LastSentBytes = %d, want 30", c.LastSentBytes)
	}
	// 3 closes without ever having had a baseline: its close counts, its
	// bytes are not the client's to report.
	closed := c3
	closed.Closed, closed.MonotonicSentBytes, closed.LastUpdateEpoch = true, 600, 350
	ns.StoreClosedConnection(closed)
	got = callAt(t, ns, "A", t0.Add(3*time.Second), 400, c2)
	if c := got[key(3)]; lastOf(c) != (last{Closed: 1}) {
		t.Errorf("older connection closed without a baseline: %+v, want only Closed=1", lastOf(c))
	}
	if n := lost(); n != 2 {
		t.Errorf("Lost()[%s] = %d, want still 2", LostClientStateFull, n)
	}
}

func TestClientStateFullOnFirstCallCounted(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnectionsStateBuffered = 1
	ns := NewNetworkState(cfg)
	got, _ := call(t, ns, "A", t0, mkConn(1, 10, 0), mkConn(2, 10, 0))
	if len(got) != 2 {
		t.Errorf("got %d connections, want both", len(got))
	}
	if n := ns.Lost()[LostClientStateFull]; n != 1 {
		t.Errorf("Lost()[%s] = %d, want 1", LostClientStateFull, n)
	}
	if n := len(ns.DumpState("A")); n != 1 {
		t.Errorf("%d baselines, want 1", n)
	}
}

func TestRTTHistogramDeltas(t *testing.T) {
	ns := NewNetworkState(testConfig())
	c := mkConn(1, 0, 0)
	c.MonotonicRTT.Buckets[3] = 5
	c.MonotonicRTT.Buckets[10] = 2
	c.MonotonicRTT.SumMicros = 2000
	call(t, ns, "A", t0, c)

	c.MonotonicRTT.Buckets[3] = 8
	c.MonotonicRTT.Buckets[4] = 1
	c.MonotonicRTT.Buckets[NumRTTBuckets-1] = 1
	c.MonotonicRTT.SumMicros = 9000
	got, _ := call(t, ns, "A", t0.Add(time.Second), c)
	var want RTTHistogram
	want.Buckets[3], want.Buckets[4], want.Buckets[NumRTTBuckets-1] = 3, 1, 1
	want.SumMicros = 7000
	if l := got[key(1)].LastRTT; l != want {
		t.Errorf("LastRTT = %+v, want %+v", l, want)
	}

	// One bucket below its baseline: that bucket is reported whole.
	c.MonotonicRTT.Buckets[10] = 1
	c.MonotonicRTT.Buckets[3] = 9
	c.MonotonicRTT.SumMicros = 9100
	got, _ = call(t, ns, "A", t0.Add(2*time.Second), c)
	want = RTTHistogram{}
	want.Buckets[10], want.Buckets[3], want.SumMicros = 1, 1, 100
	if l := got[key(1)].LastRTT; l != want {
		t.Errorf("after a bucket underflow: LastRTT = %+v, want %+v", l, want)
	}
	if n := telemetryOf(t, ns)["stats_resets"]; n != 1 {
		t.Errorf("stats_resets = %d, want 1", n)
	}

	// A closed connection's histogram delta is against the baseline too.
	cl := c
	cl.Closed = true
	cl.MonotonicRTT.Buckets[0] = 4
	ns.StoreClosedConnection(cl)
	got, _ = call(t, ns, "A", t0.Add(3*time.Second))
	want = RTTHistogram{}
	want.Buckets[0] = 4
	if l := got[key(1)].LastRTT; l != want {
		t.Errorf("closed: LastRTT = %+v, want %+v", l, want)
	}
}

func TestLifecycleCounters(t *testing.T) {
	ns := NewNetworkState(testConfig())
	pre := mkConn(1, 0, 0)
	pre.Preexisting = true
	call(t, ns, "A", t0, pre)
	call(t, ns, "B", t0, pre)

	pending := mkConn(2, 0, 0) // connecting
	pending.Established = false
	failed := mkClosed(3, 0, 0, 1)
	failed.Established = false

	sums := map[string]*last{"A": {}, "B": {}}
	step := func(sec int, active ...ConnectionStats) {
		for _, id := range []string{"A", "B"} {
			got, _ := call(t, ns, id, t0.Add(time.Duration(sec)*time.Second), active...)
			for _, c := range got {
				sums[id].Opened += c.LastOpened
				sums[id].Closed += c.LastClosed
				sums[id].Failed += c.LastFailed
			}
		}
	}
	step(1, pre, pending)
	step(2, pre, pending)
	established := pending
	established.Established = true
	step(3, pre, established)
	step(4, pre, established)
	ns.StoreClosedConnection(failed)
	preClosed := pre
	preClosed.Closed = true
	ns.StoreClosedConnection(preClosed)
	step(5, established)
	step(6, established)
	estClosed := established
	estClosed.Closed = true
	ns.StoreClosedConnection(estClosed)
	step(7)
	step(8)

	want := last{Opened: 1, Closed: 2, Failed: 1}
	for id, s := range sums {
		if *s != want {
			t.Errorf("client %s counted opened/closed/failed %d/%d/%d, want %d/%d/%d",
				id, s.Opened, s.Closed, s.Failed, want.Opened, want.Closed, want.Failed)
		}
	}
}

func TestRemoveConnections(t *testing.T) {
	ns := NewNetworkState(testConfig())
	call(t, ns, "A", t0, mkConn(1, 100, 0), mkConn(2, 100, 0))
	call(t, ns, "B", t0, mkConn(1, 100, 0), mkConn(2, 100, 0))
	call(t, ns, "A", t0.Add(time.Second), mkConn(1, 50, 0), mkConn(2, 100, 0)) // a stats reset
	ns.RemoveConnections([]ConnKey{key(1), key(9)})

	for _, id := range []string{"A", "B"} {
		dump := ns.DumpState(id)
		if _, ok := dump[key(1).String()]; ok {
			t.Errorf("%s: the removed key's baseline is still there", id)
		}
		if _, ok := dump[key(2).String()]; !ok {
			t.Errorf("%s: the other key's baseline was removed", id)
		}
	}
	got, _ := call(t, ns, "B", t0.Add(2*time.Second), mkConn(1, 150, 0), mkConn(2, 100, 0))
	if n := got[key(1)].LastSentBytes; n != 150 {
		t.Errorf("after removal: LastSentBytes = %d, want 150 (no baseline)", n)
	}
	if n := telemetryOf(t, ns)["stats_resets"]; n != 1 {
		t.Errorf("stats_resets = %d, want 1 (telemetry is not reset)", n)
	}
}

func TestGetStatsAndDumpState(t *testing.T) {
	ns := NewNetworkState(testConfig())
	c := mkConn(1, 100, 200)
	c.MonotonicRetransmits = 3
	call(t, ns, "A", t0, c, mkConn(2, 1, 2))
	ns.StoreClosedConnection(mkClosed(3, 0, 0, 1))

	before := time.Now().Unix()
	stats := ns.GetStats()
	clients, ok := stats["clients"].(map[string]interface{})
	if !ok {
		t.Fatalf("clients is %T", stats["clients"])
	}
	a, ok := clients["A"].(map[string]int64)
	if !ok {
		t.Fatalf("clients[A] is %T", clients["A"])
	}
	if a["stats"] != 2 || a["closed_connections"] != 1 || a["last_fetch"] != t0.Unix() {
		t.Errorf("clients[A] = %v, want stats 2, closed_connections 1, last_fetch %d", a, t0.Unix())
	}
	tel := telemetryOf(t, ns)
	for _, k := range []string{"stats_resets", "unordered_conns", "closed_conn_dropped", "conn_dropped", "clients_rejected"} {
		if _, ok := tel[k]; !ok {
			t.Errorf("telemetry lacks %s", k)
		}
	}
	if now, _ := stats["current_time"].(int64); now < before || now > time.Now().Unix() {
		t.Errorf("current_time = %v, want about %d", stats["current_time"], before)
	}

	dump := ns.DumpState("A")
	if len(dump) != 2 {
		t.Errorf("DumpState has %d keys, want 2", len(dump))
	}
	v, ok := dump["1/0"].(map[string]uint64)
	if !ok {
		t.Fatalf("DumpState[1/0] is %T", dump["1/0"])
	}
	if v["total_sent"] != 100 || v["total_recv"] != 200 || v["total_retransmits"] != 3 {
		t.Errorf("DumpState[1/0] = %v", v)
	}
	if d := ns.DumpState("nobody"); len(d) != 0 {
		t.Errorf("DumpState of an unknown client = %v", d)
	}
	lost := ns.Lost()
	for _, r := range []string{LostClosedBufferFull, LostClientStateFull, LostClientRejected} {
		if _, ok := lost[r]; !ok {
			t.Errorf("Lost() lacks %s", r)
		}
	}
}

// TestConcurrentClientsAndClosedConnections runs closed-connection storage
// against several clients' calls; every client must still count exact totals.
func TestConcurrentClientsAndClosedConnections(t *testing.T) {
	const clients, closed, activeConns = 3, 2000, 50
	cfg := testConfig()
	cfg.MaxClosedConnectionsBuffered = closed // the writer may run ahead of every reader
	ns := NewNetworkState(cfg)
	var traffic atomic.Uint64 // every active connection's sent total
	traffic.Store(10)
	active := func() []ConnectionStats {
		v := traffic.Load()
		out := make([]ConnectionStats, activeConns)
		for i := range out {
			out[i] = mkConn(uint64(1_000_000+i), v, 0)
		}
		return out
	}
	ids := make([]string, clients)
	for i := range ids {
		ids[i] = string(rune('A' + i))
		if _, _, err := ns.Connections(ids[i], time.Now(), 0, active()); err != nil {
			t.Fatal(err)
		}
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() { // the ring-buffer reader
		defer wg.Done()
		defer close(done)
		for i := 0; i < closed; i++ {
			ns.StoreClosedConnection(mkClosed(uint64(i+1), 1, 0, uint64(i)))
			if i%50 == 0 {
				traffic.Add(1)
			}
		}
	}()
	type sum struct{ closedSent, closedCount, activeSent uint64 }
	sums := make([]sum, clients)
	for i, id := range ids {
		wg.Add(1)
		go func() { // one HTTP handler per client
			defer wg.Done()
			scrape := func() {
				conns, _, err := ns.Connections(id, time.Now(), 0, active())
				if err != nil {
					t.Error(err)
					return
				}
				for _, c := range conns {
					if c.Closed {
						sums[i].closedSent += c.LastSentBytes
						sums[i].closedCount += uint64(c.LastClosed)
					} else {
						sums[i].activeSent += c.LastSentBytes
					}
				}
			}
			for {
				select {
				case <-done:
					scrape()
					return
				default:
					scrape()
					_ = ns.GetStats()
					_ = ns.Lost()
					_ = ns.DumpState(id)
				}
			}
		}()
	}
	wg.Wait()
	if lost := ns.Lost(); lost[LostClosedBufferFull] != 0 || lost[LostClientStateFull] != 0 || lost[LostClientRejected] != 0 {
		t.Errorf("Lost() = %v, want nothing lost", lost)
	}
	wantActive := (traffic.Load() - 10) * activeConns
	for i, s := range sums {
		if s.closedSent != closed || s.closedCount != closed || s.activeSent != wantActive {
			t.Errorf("client %s counted %+v, want %d closed bytes and closings, %d active bytes", ids[i], s, closed, wantActive)
		}
	}
}

func BenchmarkConnections100k(b *testing.B) {
	const n = 100_000
	ns, active := benchState(b, n, true)
	now := t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range active {
			active[j].MonotonicSentBytes += 10
		}
		now = now.Add(time.Second)
		conns, _, err := ns.Connections("bench", now, 0, active)
		if err != nil || len(conns) != n || conns[0].LastSentBytes != 10 {
			b.Fatalf("err %v, %d connections, LastSentBytes %d", err, len(conns), conns[0].LastSentBytes)
		}
	}
}

func TestClosedThenReusedSocketCountedAsTwoConnections(t *testing.T) {
	ns := NewNetworkState(testConfig())
	gen0 := mkConn(7, 100, 0)
	call(t, ns, "A", t0, gen0)

	// connect(AF_UNSPEC) then connect again: same cookie, next generation.
	closed := mkClosed(7, 130, 0, 10)
	ns.StoreClosedConnection(closed)
	gen1 := mkConn(7, 5, 0)
	gen1.Key.Generation = 1
	got, _ := call(t, ns, "A", t0.Add(time.Second), gen1)
	if len(got) != 2 {
		t.Fatalf("got %d connections, want both generations", len(got))
	}
	if c := got[ConnKey{7, 0}]; lastOf(c) != (last{Sent: 30, Closed: 1}) {
		t.Errorf("generation 0: Last = %+v, want 30 bytes and a closing", lastOf(c))
	}
	if c := got[ConnKey{7, 1}]; lastOf(c) != (last{Sent: 5, Opened: 1}) {
		t.Errorf("generation 1: Last = %+v, want 5 bytes and an opening", lastOf(c))
	}
	gen1.MonotonicSentBytes = 8
	got, _ = call(t, ns, "A", t0.Add(2*time.Second), gen1)
	if c := got[ConnKey{7, 1}]; lastOf(c) != (last{Sent: 3}) || len(got) != 1 {
		t.Errorf("next call: %d connections, generation 1 Last = %+v, want only it with 3 bytes", len(got), lastOf(c))
	}
}

// BenchmarkConnections100kChurn is BenchmarkConnections100k with 1% of the
// connections closed and replaced by new ones between two calls.
func BenchmarkConnections100kChurn(b *testing.B) {
	const n, churn = 100_000, 1000
	ns, active := benchState(b, n, false)
	next := uint64(n + 1)
	now := t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range active {
			active[j].MonotonicSentBytes += 10
		}
		for j := 0; j < churn; j++ {
			k := (i*churn*7 + j*97) % n
			c := active[k]
			c.Closed = true
			ns.StoreClosedConnection(c)
			active[k] = mkConn(next, 10, 0)
			next++
		}
		now = now.Add(time.Second)
		conns, _, err := ns.Connections("bench", now, 0, active)
		if err != nil || len(conns) != n+churn {
			b.Fatalf("err %v, %d connections, want %d", err, len(conns), n+churn)
		}
		active = conns[:n]
	}
}

// A close record that reaches user space after a client's first call, for a
// connection that closed before it, is not that client's.
func TestCloseBeforeFirstCallIsNotNewClients(t *testing.T) {
	ns := NewNetworkState(nil)
	now := time.Now()
	if _, _, err := ns.Connections("old", now, 1000, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ns.Connections("new", now, 2000, nil); err != nil {
		t.Fatal(err)
	}
	c := mkConn(1, 500, 50)
	c.Closed, c.Established, c.LastUpdateEpoch = true, true, 1500 // closed between the two first calls
	ns.StoreClosedConnection(c)
	for id, want := range map[string]uint64{"old": 500, "new": 0} {
		conns, _, err := ns.Connections(id, now, 3000, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got uint64
		for _, x := range conns {
			got += x.LastSentBytes
		}
		if got != want {
			t.Errorf("client %s: sent %d, want %d", id, got, want)
		}
	}
}

// benchState returns a state whose client "bench" made its first call (at
// t0) with n active connections, each with an RTT sample when rtt is set.
func benchState(b *testing.B, n int, rtt bool) (NetworkState, []ConnectionStats) {
	b.Helper()
	cfg := NewDefaultConfig()
	cfg.MaxConnectionsStateBuffered = 2 * n
	ns := NewNetworkState(cfg)
	active := make([]ConnectionStats, n)
	for i := range active {
		active[i] = mkConn(uint64(i+1), 1000, 1000)
		if rtt {
			active[i].MonotonicRTT.Buckets[i%NumRTTBuckets] = 1
		}
	}
	if _, _, err := ns.Connections("bench", t0, 0, active); err != nil {
		b.Fatal(err)
	}
	return ns, active
}

// By default a client can hold a baseline of every connection the kernel
// can track (TCP and UDP), so client_state_full is not reachable at the
// defaults (issue 11.4: 75,000 baselines for 131,072 trackable).
func TestDefaultStateHoldsEveryTrackedConnection(t *testing.T) {
	cfg := NewDefaultConfig()
	if cfg.MaxConnectionsStateBuffered < cfg.StateNeeded() {
		t.Fatalf("default MaxConnectionsStateBuffered %d < %d, what the kernel can track (2 × %d)",
			cfg.MaxConnectionsStateBuffered, cfg.StateNeeded(), cfg.MaxTrackedConnections)
	}
	ns := NewNetworkState(cfg)
	active := make([]ConnectionStats, cfg.StateNeeded())
	for i := range active {
		active[i] = startedAt(mkConn(uint64(i+1), 1, 0), 1)
	}
	callAt(t, ns, "A", t0, 10, active...)
	if n := ns.Lost()[LostClientStateFull]; n != 0 {
		t.Errorf("Lost()[%s] = %d with the kernel full, want 0", LostClientStateFull, n)
	}
}

// At the cap, the log drops its oldest records without growing: a client
// that takes its records often gets every one, one that never does loses
// all but the last MaxClosedConnectionsBuffered, each counted once.
func TestClosedLogAtItsCap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxClosedConnectionsBuffered = 10
	ns := NewNetworkState(cfg)
	call(t, ns, "often", t0)
	call(t, ns, "never", t0)
	got := 0
	for i := range 1000 {
		ns.StoreClosedConnection(mkClosed(uint64(i+1), 1, 0, uint64(i+1)))
		if i%7 == 6 {
			m, _ := call(t, ns, "often", t0.Add(time.Second))
			got += len(m)
		}
		if n := len(ns.(*networkState).log); n > 2*10+1 {
			t.Fatalf("the log's array holds %d records at a cap of 10", n)
		}
	}
	m, _ := call(t, ns, "often", t0.Add(time.Second))
	got += len(m)
	if got != 1000 {
		t.Errorf("the client that takes often got %d records, want 1000", got)
	}
	m, _ = call(t, ns, "never", t0.Add(time.Second))
	if len(m) != 10 || m[key(1000)].LastSentBytes != 1 {
		t.Errorf("the client that never took got %d records, want the last 10", len(m))
	}
	if n := ns.Lost()[LostClosedBufferFull]; n != 990 {
		t.Errorf("Lost()[%s] = %d, want 990", LostClosedBufferFull, n)
	}
}

// A connection that started long before a new client and closes between
// the client's admission and its first read (the read waits for the
// tracer's lock) is reported closed to it, without its traffic: none of it
// is the client's (review of issue 11.5: its whole lifetime was reported,
// and counted twice by a Prometheus whose counters had just reset).
func TestFirstCallCloseOfOlderConnectionReportsOnlyTheClose(t *testing.T) {
	ns := NewNetworkState(testConfig())
	if err := ns.Admit("A", t0, 100); err != nil {
		t.Fatal(err)
	}
	c := startedAt(mkConn(1, 1<<30, 1<<20), 10)
	c.Closed, c.LastUpdateEpoch = true, 150
	ns.StoreClosedConnection(c)
	conns, newClient, err := ns.Connections("A", t0, 200, nil)
	if err != nil || !newClient || len(conns) != 1 {
		t.Fatalf("first call: %d connections, newClient %v, err %v; want the closed one", len(conns), newClient, err)
	}
	if got := lastOf(conns[0]); got != (last{Closed: 1}) {
		t.Errorf("first call: %+v, want only Closed=1", got)
	}
}
