package netstate

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// A client's first scrape counts nothing of what came before it; its next
// counts what changed.
func TestFirstScrapeZeroThenDeltas(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 1000, 2000)
	v := scrape(t, st, "a")
	if got := v.of(1); got != (sums{}) {
		t.Errorf("first scrape: %+v, want zero", got)
	}
	f.add(1, 10, 20)
	if got, want := scrape(t, st, "a").of(1), (sums{Sent: 10, Recv: 20}); got != want {
		t.Errorf("second scrape: %+v, want %+v", got, want)
	}
	f.add(1, 5, 0)
	if got, want := scrape(t, st, "a").of(1), (sums{Sent: 15, Recv: 20}); got != want {
		t.Errorf("third scrape: %+v, want %+v", got, want)
	}
}

// A connection that opens and closes between two scrapes is counted whole,
// once, by every client; nothing of it is kept per client.
func TestShortConnectionFoldedForEveryClient(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "a")
	scrape(t, st, "b")
	f.open(1, 300, 400)
	f.close(1)
	want := sums{Sent: 300, Recv: 400, Opened: 1, Closed: 1}
	for range 2 {
		for _, id := range []string{"a", "b"} {
			if got := scrape(t, st, id).of(1); got != want {
				t.Errorf("%s: %+v, want %+v", id, got, want)
			}
		}
	}
	if len(st.live) != 0 {
		t.Errorf("%d live entries after the close, want 0", len(st.live))
	}
}

// A connection older than the client: the client counts its traffic from
// its first scrape, and its close, not its opening.
func TestOlderConnectionFromFirstScrape(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 1000, 0)
	scrape(t, st, "a")
	f.add(1, 1000, 0)
	scrape(t, st, "late") // its first: 2000 into its offset
	f.add(1, 50, 0)
	f.close(1)
	if got, want := scrape(t, st, "a").of(1), (sums{Sent: 1050, Closed: 1}); got != want {
		t.Errorf("a: %+v, want %+v", got, want)
	}
	if got, want := scrape(t, st, "late").of(1), (sums{Sent: 50, Closed: 1}); got != want {
		t.Errorf("late: %+v, want %+v", got, want)
	}
}

// A connection that closed before a client's first scrape is not the
// client's.
func TestClosedBeforeClientNotSeen(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "a") // someone, so that the close is folded
	f.open(1, 10, 10)
	f.close(1)
	if v := scrape(t, st, "b"); len(v) != 0 {
		t.Errorf("b's first view: %v, want nothing", v)
	}
}

// A connection that closes while a client's snapshot is read is in the
// snapshot and folded at once: counted once, not twice, and the next
// scrape does not go down (the tombstone case).
func TestCloseDuringReadCountedOnce(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 100, 0)
	scrape(t, st, "a")
	f.add(1, 50, 0)
	f.during = func() { f.add(1, 7, 0); f.close(1) }
	v := scrape(t, st, "a")
	f.during = nil
	want := sums{Sent: 57, Closed: 1}
	if got := v.of(1); got != want {
		t.Errorf("scrape during the close: %+v, want %+v", got, want)
	}
	if got := scrape(t, st, "a").of(1); got != want {
		t.Errorf("next scrape: %+v, want %+v", got, want)
	}
}

// A new client whose first snapshot sees a connection that closes while
// it is read: its traffic since the read and its close are the client's
// (issue 11.5), its opening is not.
func TestCloseDuringFirstReadOfNewClient(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "other")
	f.open(1, 100, 0)
	f.during = func() { f.add(1, 9, 0); f.close(1) }
	v := scrape(t, st, "new")
	f.during = nil
	want := sums{Sent: 9, Closed: 1}
	if got := v.of(1); got != want {
		t.Errorf("new client's first view: %+v, want %+v", got, want)
	}
	if got := scrape(t, st, "new").of(1); got != want {
		t.Errorf("its next: %+v, want %+v", got, want)
	}
	if got, want := scrape(t, st, "other").of(1), (sums{Sent: 109, Opened: 1, Closed: 1}); got != want {
		t.Errorf("the older client: %+v, want %+v", got, want)
	}
}

// A connection the tracer stops reporting without a close (its close
// record lost, timed out) keeps what was counted of it; if it comes back
// (rebased: only what is new), that is added, and it is not opened again.
func TestDroppedConnectionKeepsItsCounts(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 100, 0)
	scrape(t, st, "a")
	f.add(1, 40, 0)
	scrape(t, st, "a")
	f.drop(1)
	if got, want := scrape(t, st, "a").of(1), (sums{Sent: 40}); got != want {
		t.Errorf("after the drop: %+v, want %+v", got, want)
	}
	// Back, rebased (the tracer's known: counts from what was reported).
	f.mu.Lock()
	c := tracer.ConnectionStats{Key: tracer.ConnKey{Cookie: 1}, Type: tracer.TCP, Established: true, Preexisting: true, Monotonic: tracer.Counters{SentBytes: 5}}
	c.StartEpoch, c.LastUpdateEpoch = 1, f.tick()
	f.active[c.Key] = c
	f.mu.Unlock()
	if got, want := scrape(t, st, "a").of(1), (sums{Sent: 45}); got != want {
		t.Errorf("back: %+v, want %+v", got, want)
	}
	f.close(1)
	if got, want := scrape(t, st, "a").of(1), (sums{Sent: 45, Closed: 1}); got != want {
		t.Errorf("closed: %+v, want %+v", got, want)
	}
}

// A connection's counter that went down (the tracer keeps them monotonic:
// a bug if it did) cannot take its series below what it counted before
// the client: the series floors at 0, and the reset is counted.
func TestCounterBelowOffsetFloors(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 1000, 0)
	scrape(t, st, "a")
	f.mu.Lock()
	c := f.active[tracer.ConnKey{Cookie: 1}]
	c.Monotonic.SentBytes = 30
	f.active[c.Key] = c
	f.mu.Unlock()
	if got := scrape(t, st, "a").of(1).Sent; got != 0 {
		t.Errorf("sent = %d, want 0", got)
	}
	if n := st.tel.statsResets; n == 0 {
		t.Error("no stats reset counted")
	}
}

// truth is what the test knows of one connection.
type truth struct {
	sent, recv uint64
	open       bool
	closed     bool
	// dropped: the tracer stopped reporting it; its counts so far stay.
	dropped bool
	// held: closed, its fold waiting (Snapshot.Leaving); seenLive: a
	// scrape's snapshot had it live.
	held, seenLive bool
}

// Bounds: no per-connection state per client for connections newer than
// the client, however many closed since its last scrape; 16 clients hold
// what one holds, but their series.
func TestNoPerConnectionStatePerClient(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	for i := range 16 {
		scrape(t, st, fmt.Sprint(i))
	}
	for i := range 10_000 {
		f.open(uint64(1000+i), 10, 10)
		f.close(uint64(1000 + i))
	}
	if len(st.live) != 0 || st.keys.len() != 0 || st.tombs != nil || len(st.addrs) > st.cfg.MaxAddrs {
		t.Errorf("shared: %d live entries, %d label sets, %d tombs, %d addresses", len(st.live), st.keys.len(), len(st.tombs), len(st.addrs))
	}
	// Once every client scraped, the addresses go.
	for i := range 16 {
		scrape(t, st, fmt.Sprint(i))
	}
	if len(st.addrs) != 0 {
		t.Errorf("%d addresses held after every client scraped", len(st.addrs))
	}
}

// Past MaxSeries label sets a client counts into one overflow series,
// each connection once, and nothing is lost from the sums.
func TestOverflowSeriesCountsEachConnectionOnce(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{MaxSeries: 2})
	scrape(t, st, "a")
	for i := uint64(1); i <= 5; i++ {
		f.open(i, 10, 0)
	}
	v, err := st.Scrape("a", t0)
	if err != nil {
		t.Fatal(err)
	}
	f.add(4, 5, 0)
	f.close(5)
	v, err = st.Scrape("a", t0)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	var over Series
	for _, s := range v.Series {
		total += s.SentBytes
		if s.Overflow {
			over = s
		}
	}
	if v.Own != 2 || v.OverflowConns != 3 || total != 55 || over.SentBytes != 35 || over.Closed != 1 {
		t.Errorf("own %d, overflow connections %d, sent %d (overflow %d, closed %d); want 2, 3, 55, 35, 1",
			v.Own, v.OverflowConns, total, over.SentBytes, over.Closed)
	}
}

// A new client beyond MaxClients is refused before anything is read, and
// counted; one-shot clients make room after their grace.
func TestTooManyClientsRefusedBeforeRead(t *testing.T) {
	f := newFakeTracer()
	now := t0
	st := newTestState(f, Config{MaxClients: 1, Now: func() time.Time { return now }})
	for range 2 { // a client that came back is never evicted
		if _, err := st.Scrape("p@10.0.0.1", now); err != nil {
			t.Fatal(err)
		}
	}
	reads := f.reads
	_, err := st.Scrape("x@10.0.0.2", now)
	if !errors.Is(err, ErrTooManyClients) || f.reads != reads {
		t.Fatalf("err %v, %d reads; want ErrTooManyClients and no read", err, f.reads-reads)
	}
	if st.Lost()[LostClientRejected] != 1 {
		t.Errorf("lost %v, want client_rejected 1", st.Lost())
	}
}

// A one-shot client (never came back) is evicted for a new one after the
// grace, and counted.
func TestOneShotClientEvicted(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{MaxClients: 1})
	if _, err := st.Scrape("once@10.0.0.1", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Scrape("new@10.0.0.2", t0.Add(oneShotGrace+time.Second)); err != nil {
		t.Fatalf("new client after the grace: %v", err)
	}
	if st.HasClient("once@10.0.0.1") || st.Lost()[LostClientEvicted] != 1 {
		t.Errorf("the one-shot client is held, or not counted: %v", st.Lost())
	}
}

// A client holds nothing per connection: the connections alive at its
// first scrape, however many, count their traffic from then on and their
// closing, not their opening (the seed's --tracer.max-connections-state-buffered
// bounded them: past it, a connection counted only its closing).
func TestEveryOlderConnectionCountsFromFirstScrape(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	const n = 500
	for i := range uint64(n) {
		f.open(i+1, 100+i, 7)
	}
	scrape(t, st, "old")
	scrape(t, st, "a")
	for i := range uint64(n) {
		f.add(i+1, i, 1)
		if i%2 == 0 {
			f.close(i + 1)
		}
	}
	for _, id := range []string{"a", "old"} {
		v := scrape(t, st, id)
		for i := range uint64(n) {
			want := sums{Sent: i, Recv: 1, Closed: bit(i%2 == 0)}
			if got := v.of(i + 1); got != want {
				t.Fatalf("%s, connection %d: %+v, want %+v", id, i+1, got, want)
			}
		}
	}
	if got := st.Lost()[LostClientStateFull]; got != 0 {
		t.Errorf("client_state_full = %d, want 0", got)
	}
}

// Clients expire without scrapes: the drain's calls expire them.
func TestClientsExpireWithoutScrapes(t *testing.T) {
	f := newFakeTracer()
	now := t0
	st := newTestState(f, Config{ClientExpiry: time.Minute, Now: func() time.Time { return now }})
	scrape(t, st, "a")
	now = now.Add(2 * time.Minute)
	f.open(1, 1, 1)
	f.close(1)
	if st.Clients() != 0 {
		t.Errorf("%d clients held past the expiry, want 0", st.Clients())
	}
}

// Scrapes and the drain at once (run with -race): the sums stay exact.
func TestConcurrentScrapesAndDrain(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "a")
	scrape(t, st, "b")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= 2000; i++ {
			f.open(i, 3, 4)
			f.close(i)
		}
	}()
	for range 50 {
		scrape(t, st, "a")
		scrape(t, st, "b")
	}
	wg.Wait()
	for _, id := range []string{"a", "b"} {
		var s sums
		for _, ser := range scrape(t, st, id) {
			s.Sent += ser.SentBytes
			s.Recv += ser.RecvBytes
			s.Closed += ser.Closed
		}
		if want := (sums{Sent: 6000, Recv: 8000, Closed: 2000}); s != want {
			t.Errorf("%s: %+v, want %+v", id, s, want)
		}
	}
}

// A failed connect counts a failure, not an opening or a closing; RTT
// samples are counted once each.
func TestFailuresAndRTT(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "a")
	f.open(1, 0, 0)
	f.mu.Lock()
	c := f.active[tracer.ConnKey{Cookie: 1}]
	c.Established = false
	c.End = tracer.ReasonRefused
	f.active[c.Key] = c
	f.mu.Unlock()
	f.close(1)
	// An established connection reset by its peer: closed, and aborted.
	f.open(3, 0, 0)
	f.mu.Lock()
	c = f.active[tracer.ConnKey{Cookie: 3}]
	c.End = tracer.ReasonReset
	f.active[c.Key] = c
	f.mu.Unlock()
	f.close(3)
	f.open(2, 0, 0)
	f.mu.Lock()
	c = f.active[tracer.ConnKey{Cookie: 2}]
	c.Monotonic.RTT.Buckets[10] = 3
	c.Monotonic.RTT.SumMicros = 3000
	f.active[c.Key] = c
	f.mu.Unlock()
	v := scrape(t, st, "a")
	if got, want := v.of(1), (sums{Failed: 1}); got != want {
		t.Errorf("failed connect: %+v, want %+v", got, want)
	}
	var refused, reset [tracer.NumReasons]uint64
	refused[tracer.ReasonRefused], reset[tracer.ReasonReset] = 1, 1
	if s := v["1"]; s.Failures != refused || s.Aborts != ([tracer.NumReasons]uint64{}) {
		t.Errorf("failed connect: failures %v aborts %v, want %v and none", s.Failures, s.Aborts, refused)
	}
	if s := v["3"]; s.Closed != 1 || s.Aborts != reset || s.Failed != 0 {
		t.Errorf("reset connection: closed %d failed %d aborts %v, want 1, 0, %v", s.Closed, s.Failed, s.Aborts, reset)
	}
	f.mu.Lock()
	c = f.active[tracer.ConnKey{Cookie: 2}]
	c.Monotonic.RTT.Buckets[10] = 5
	c.Monotonic.RTT.SumMicros = 5000
	f.active[c.Key] = c
	f.mu.Unlock()
	f.close(2)
	s := scrape(t, st, "a")["2"]
	if s.RTT.Buckets[10] != 5 || s.RTT.SumMicros != 5000 || !s.TCP {
		t.Errorf("RTT bucket 10 = %d, sum %d µs, TCP %v; want 5, 5000, true", s.RTT.Buckets[10], s.RTT.SumMicros, s.TCP)
	}
}

// A socket reused for a new connection (same cookie, a new generation) is
// two connections.
func TestReusedSocketIsTwoConnections(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "a")
	f.open(1, 10, 0)
	f.close(1)
	f.mu.Lock()
	c := tracer.ConnectionStats{Key: tracer.ConnKey{Cookie: 1, Generation: 1}, Type: tracer.TCP, Established: true, Monotonic: tracer.Counters{SentBytes: 5}}
	c.StartEpoch = f.tick()
	c.LastUpdateEpoch = c.StartEpoch
	f.active[c.Key] = c
	f.mu.Unlock()
	v, err := st.Scrape("a", t0)
	if err != nil {
		t.Fatal(err)
	}
	var total sums
	for _, s := range v.Series {
		total.Sent += s.SentBytes
		total.Opened += s.Opened
		total.Closed += s.Closed
	}
	if want := (sums{Sent: 15, Opened: 2, Closed: 1}); total != want {
		t.Errorf("%+v, want %+v", total, want)
	}
}

// The seed's debug calls show the clients and their series' offsets.
func TestGetStatsAndDumpState(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 10, 20)
	scrape(t, st, "a")
	dump := st.DumpState("a")
	if len(dump) != 1 || dump["1"].(map[string]uint64)["total_sent"] != 10 {
		t.Errorf("DumpState: %v", dump)
	}
	stats := st.GetStats()
	if c := stats["clients"].(map[string]any)["a"].(map[string]int64); c["series"] != 1 {
		t.Errorf("GetStats: %v", stats)
	}
	if len(st.DumpState("nobody")) != 0 {
		t.Error("DumpState of an unknown client is not empty")
	}
}

// ClientExpiry 0 keeps clients forever (it expired them at once: found by
// BenchmarkFold, whose clients were gone at the first fold).
func TestClientExpiryZeroKeepsClients(t *testing.T) {
	f := newFakeTracer()
	st := New[tracer.ConnKey](f, perConn{}, Config{Now: func() time.Time { return t0.Add(time.Hour) }})
	f.st = st
	if _, err := st.Scrape("a", t0); err != nil {
		t.Fatal(err)
	}
	f.open(1, 1, 1)
	f.close(1)
	if !st.HasClient("a") {
		t.Error("a client was expired with ClientExpiry 0")
	}
}

// The names of a view cover the connections folded since the client's
// previous scrape, not only the live ones.
func TestViewAddrsIncludeFolded(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "a")
	c := f.open(1, 1, 1)
	f.close(1)
	v, err := st.Scrape("a", t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Addrs) != 1 || v.Addrs[0] != c.Dest {
		t.Errorf("addresses %v, want [%v]", v.Addrs, c.Dest)
	}
	if v, _ = st.Scrape("a", t0); len(v.Addrs) != 0 {
		t.Errorf("next scrape: addresses %v, want none", v.Addrs)
	}
}

// A connection that closed but waits for its NAT (Snapshot.Leaving) keeps
// counting for the clients that counted it live: nothing goes down until
// its fold (review of issue 12: the views went 500 → 0 → 500).
func TestLeavingConnectionKeepsCounting(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "a")
	f.open(1, 0, 0)
	f.add(1, 500, 0)
	v1 := scrape(t, st, "a").of(1)
	f.add(1, 20, 0)
	f.hold(1)
	v2 := scrape(t, st, "a").of(1)
	scrape(t, st, "late") // a client that comes meanwhile does not count it
	f.release(1, nil)
	v3 := scrape(t, st, "a").of(1)
	if want := (sums{Sent: 500, Opened: 1}); v1 != want {
		t.Errorf("live: %+v, want %+v", v1, want)
	}
	if want := (sums{Sent: 520, Opened: 1, Closed: 1}); v2 != want {
		t.Errorf("leaving (closed, its fold waiting): %+v, want %+v", v2, want)
	}
	if want := (sums{Sent: 520, Opened: 1, Closed: 1}); v3 != want {
		t.Errorf("folded: %+v, want %+v", v3, want)
	}
	if got := scrape(t, st, "late").of(1); got != (sums{}) {
		t.Errorf("the late client: %+v, want nothing (it closed before that client)", got)
	}
}

// peerLab labels a connection by its NAT remote address.
type peerLab struct{}

func (peerLab) Key(c *tracer.ConnectionStats) netip.Addr { return c.NATRemote() }
func (peerLab) Values(k netip.Addr) []string             { return []string{k.String()} }
func (peerLab) Overflow() []string                       { return []string{"overflow"} }
func (peerLab) Text(v []string) string                   { return v[0] }

// newPeerState is a state over a fake tracer, labelled by peer, and a
// scrape of client "a" that returns its bytes sent per peer.
func newPeerState(t *testing.T) (*fakeTracer, func() map[string]uint64) {
	f := newFakeTracer()
	st := New[netip.Addr](f, peerLab{}, Config{MaxClients: 4, Now: func() time.Time { return t0 }})
	f.st = st
	return f, func() map[string]uint64 {
		t.Helper()
		v, err := st.Scrape("a", t0)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]uint64{}
		for _, s := range v.Series {
			m[s.Labels[0]] = s.SentBytes
		}
		return m
	}
}

// A connection's label set is the one it got when first seen, whatever NAT
// its fold carries: no series loses what it counted (review of issue 12:
// the live series went 500 → 0, the other one jumped by 500).
func TestLabelSetFixedAtFirstSight(t *testing.T) {
	f, sent := newPeerState(t)
	sent()
	c := f.open(1, 0, 0)
	f.mu.Lock()
	c.IPTranslation = &tracer.IPTranslation{ReplSrcIP: netip.MustParseAddr("192.168.9.9")}
	c.Monotonic.SentBytes = 500
	f.active[c.Key] = c
	f.mu.Unlock()
	f.open(2, 0, 0)
	v1 := sent()
	f.hold(1)
	sent()
	f.release(1, nil) // its NAT not found at the fold
	v3 := sent()
	if v1["192.168.9.9"] != 500 || v3["192.168.9.9"] != 500 || v3[c.Dest.String()] != 0 {
		t.Errorf("before %v, after %v: want 500 under 192.168.9.9 in both, nothing under %s", v1, v3, c.Dest)
	}
}

// A fold during a client's own read does not expire that client (review of
// issue 12: the scrape failed, and the next was a new client's).
func TestNoExpiryDuringOwnRead(t *testing.T) {
	f := newFakeTracer()
	clk := t0
	st := newTestState(f, Config{ClientExpiry: time.Minute, Now: func() time.Time { return clk }})
	f.open(1, 0, 0)
	if _, err := st.Scrape("a", t0); err != nil {
		t.Fatal(err)
	}
	f.open(2, 0, 0)
	clk = t0.Add(time.Minute - time.Millisecond)
	f.during = func() { clk = t0.Add(time.Minute + time.Millisecond); f.close(2) }
	if _, err := st.Scrape("a", clk); err != nil {
		t.Errorf("a scrape 1 ms inside the expiry: %v", err)
	}
}

// The same key twice in a snapshot counts once, its overflow too.
func TestDuplicateKeyInSnapshotCountedOnce(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{MaxSeries: 1})
	scrape(t, st, "a")
	f.open(1, 10, 0)
	f.open(2, 10, 0)
	dup := &dupTracer{fakeTracer: f}
	st.src = dup
	v, err := st.Scrape("a", t0)
	if err != nil {
		t.Fatal(err)
	}
	var sent, open uint64
	for _, s := range v.Series {
		sent += s.SentBytes
		open += s.Open
	}
	if sent != 20 || open != 2 || v.OverflowConns != 1 {
		t.Errorf("sent %d, open %d, overflow %d; want 20, 2, 1", sent, open, v.OverflowConns)
	}
}

// dupTracer lists every connection twice.
type dupTracer struct{ *fakeTracer }

func (d *dupTracer) Snapshot() (*tracer.Snapshot, error) {
	s, err := d.fakeTracer.Snapshot()
	if err == nil {
		s.Conns = append(s.Conns, s.Conns...)
	}
	return s, err
}

// A full address list drops its older half, counted, rather than every
// new address.
func TestAddrsBoundedAndCounted(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{MaxAddrs: 10})
	scrape(t, st, "a")
	scrape(t, st, "idle") // never scrapes again: the addresses wait for it
	for i := uint64(1); i <= 30; i++ {
		f.open(i, 1, 1)
		f.close(i)
	}
	if len(st.addrs) > 10 || st.tel.addrsDropped == 0 {
		t.Errorf("%d addresses held, %d dropped; want at most 10, some dropped", len(st.addrs), st.tel.addrsDropped)
	}
	v, err := st.Scrape("a", t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Addrs) == 0 || v.Addrs[len(v.Addrs)-1] != netip.AddrFrom4([4]byte{10, 0, 1, 30}) {
		t.Errorf("addresses %v: want the newest kept", v.Addrs)
	}
}

// A connection older than the client that no snapshot lists (waiting in
// an accept queue, with the task_file iterator) and that closes after the
// client's first scrape counts whole (its counters start at the tracer's
// start): it was the client's from its first scrape on.
func TestUnlistedOlderConnectionCountsAtClose(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	c := f.open(1, 0, 0)
	f.mu.Lock()
	delete(f.active, c.Key) // not listed: no file holds it
	f.mu.Unlock()
	scrape(t, st, "a")
	c.Monotonic.RecvBytes = 2000
	c.Monotonic.SentBytes = 55
	c.Closed = true
	c.LastUpdateEpoch = f.KTime()
	st.Closed([]tracer.ConnectionStats{c})
	if got, want := scrape(t, st, "a").of(1), (sums{Sent: 55, Recv: 2000, Opened: 1, Closed: 1}); got != want {
		t.Errorf("%+v, want %+v", got, want)
	}
}

// checkKeyTable: the interned label sets are exactly those of the live
// connections, each referenced once per live connection.
func checkKeyTable[K comparable](t *testing.T, st *State[K]) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	refs := map[uint32]uint32{}
	for _, lc := range st.live {
		refs[lc.key]++
	}
	if len(refs) != st.keys.len() {
		t.Fatalf("%d label sets interned, the live connections use %d", st.keys.len(), len(refs))
	}
	for id, n := range refs {
		if st.keys.refs[id] != n {
			t.Fatalf("label set %d: %d references held, %d live connections use it", id, st.keys.refs[id], n)
		}
		if got := st.keys.ids[st.keys.key(id)]; got != id {
			t.Fatalf("label set %d is interned as %d", id, got)
		}
	}
}

// A step finds a live connection's series by the id of its label set
// (client.byID). An id freed with its label set's last connection and
// given to another label set names that one: a connection of the new set
// counts under its own series, not under the old set's.
func TestSeriesByIDFollowsReusedIDs(t *testing.T) {
	f, sent := newPeerState(t)
	sent()
	f.open(1, 100, 0) // 10.0.1.1: id 0, cached by the client's step
	sent()
	f.close(1)      // its label set's last connection: id 0 freed
	f.open(2, 7, 0) // 10.0.1.2 takes id 0
	got := sent()
	if got["10.0.1.1"] != 100 || got["10.0.1.2"] != 7 {
		t.Errorf("after the id's reuse: %v, want 100 under 10.0.1.1 and 7 under 10.0.1.2", got)
	}
}

// A connection closed before a client came, its fold waiting (for its
// NAT, up to --tracer.conntrack-interval), is in the snapshots' Leaving
// at that client's first scrape and at its next ones. It is not the
// client's to count, live or folded: the second scrape counted it whole
// (500 bytes sent, opened, closed), and its fold then took it back to 0,
// a counter that went down.
func TestLeavingAtFirstScrapeNeverCountedWhole(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.st = st
	f.open(1, 500, 0)
	scrape(t, st, "a") // seen live: the snapshots hold it while it leaves
	f.hold(1)          // closes; its fold waits
	var got []sums
	got = append(got, scrape(t, st, "b").of(1), scrape(t, st, "b").of(1))
	f.release(1, nil)
	got = append(got, scrape(t, st, "b").of(1))
	for i, v := range got {
		if v != (sums{}) {
			t.Errorf("b's scrape %d: %+v, want nothing (it closed before b came)", i+1, v)
		}
	}
	if v := scrape(t, st, "a").of(1); v != (sums{Closed: 1}) {
		t.Errorf("a, older than it: %+v, want its closing only", v)
	}
}

// A connection closed before a client came and still leaving (its fold
// waiting) is not the client's: it takes none of its --collector.max-series
// label sets, nor counts in its OverflowConns (a review of issue 14's third
// stop: it took b's only label set, so b's own connection went to
// overflow).
func TestLeavingNotOursTakesNoSeries(t *testing.T) {
	t.Run("series", func(t *testing.T) {
		f := newFakeTracer()
		st := newTestState(f, Config{MaxSeries: 1})
		f.open(1, 500, 0)
		scrape(t, st, "a")
		f.hold(1) // closes before b comes
		if _, ok := scrape(t, st, "b")["1"]; ok {
			t.Error("b's first view has a series for connection 1, closed before b came")
		}
		f.open(2, 100, 0)
		if got := scrape(t, st, "b").of(2); got != (sums{Sent: 100, Opened: 1}) {
			t.Errorf("b's own connection 2: %+v under its own series, want 100 sent, opened", got)
		}
	})
	t.Run("overflow", func(t *testing.T) {
		f := newFakeTracer()
		st := newTestState(f, Config{MaxSeries: 1})
		f.open(1, 500, 0)
		f.open(3, 7, 0)
		scrape(t, st, "a")
		f.hold(1)
		scrape(t, st, "b")
		vw, err := st.Scrape("b", t0)
		if err != nil {
			t.Fatal(err)
		}
		if vw.OverflowConns != 0 {
			t.Errorf("b: OverflowConns %d, want 0: connection 1 closed before b came, and 3 has b's series", vw.OverflowConns)
		}
	})
}

// A connection first seen by a client's first scrape, that sends more and
// closes while that scrape reads (its fold waiting for its NAT), counts
// for that client what it sent after the snapshot read it, and its
// closing: the offset holds what it had then. As the leaving connection of
// the next scrape, and at its fold.
func TestHeldDuringFirstReadCountsSinceTheSnapshot(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	f.open(1, 100, 10)
	f.during = func() {
		f.add(1, 5, 1)
		f.hold(1)
	}
	scrape(t, st, "a")
	f.during = nil
	want := sums{Sent: 5, Recv: 1, Closed: 1}
	if got := scrape(t, st, "a").of(1); got != want {
		t.Errorf("leaving: %+v, want %+v", got, want)
	}
	f.release(1, nil)
	if got := scrape(t, st, "a").of(1); got != want {
		t.Errorf("folded: %+v, want %+v", got, want)
	}
	if st.tel.statsResets != 0 {
		t.Errorf("%d series below their offset", st.tel.statsResets)
	}
}

// oneSet labels every connection alike: one series sums them all.
type oneSet struct{}

func (oneSet) Key(*tracer.ConnectionStats) string { return "all" }
func (oneSet) Values(k string) []string           { return []string{k} }
func (oneSet) Overflow() []string                 { return []string{"overflow"} }
func (oneSet) Text(v []string) string             { return v[0] }

func sentOfAll(t *testing.T, st *State[string], id string) uint64 {
	t.Helper()
	v, err := st.Scrape(id, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range v.Series {
		if s.Labels[0] == "all" {
			return s.SentBytes
		}
	}
	return 0
}

// A connection in a client's offsets that goes missing from a snapshot
// without leaving (the tracer should not let that happen) keeps its entry
// while the offsets hold it: when it comes back, or its fold comes, what
// it had counted before the client cancels out, and the series counts the
// other connections' traffic (a review found the series short by that
// connection's whole past for good when the entry was forgotten). While
// missing, the series is floored (it cannot show what the connection
// counted since), counted once. When the client goes, the entry goes.
func TestMissingConnectionKeepsItsOffset(t *testing.T) {
	for _, back := range []bool{false, true} {
		t.Run(fmt.Sprintf("back=%v", back), func(t *testing.T) {
			f := newFakeTracer()
			st := New[string](f, oneSet{}, Config{MaxClients: 16, Now: func() time.Time { return t0 }})
			f.st = st
			f.open(1, 100, 0)
			sentOfAll(t, st, "a") // 100 into the offset
			f.open(2, 10, 0)
			if got := sentOfAll(t, st, "a"); got != 10 {
				t.Fatalf("after 2 opened: %d, want 10", got)
			}
			x := f.vanish(1)
			sentOfAll(t, st, "a")
			sentOfAll(t, st, "a")
			if st.tel.missing != 1 || st.missing != 1 || st.tel.statsResets != 1 {
				t.Fatalf("missing counted %d, kept %d, floored %d times; want 1, 1, 1", st.tel.missing, st.missing, st.tel.statsResets)
			}
			if back {
				f.mu.Lock()
				f.active[x.Key] = x
				f.mu.Unlock()
			} else {
				st.Closed([]tracer.ConnectionStats{x}) // gone, with its last values
			}
			f.add(2, 50, 0)
			if got := sentOfAll(t, st, "a"); got != 60 {
				t.Errorf("after 2 sent 50 more: %d, want 60", got)
			}
			if st.missing != 0 {
				t.Errorf("%d entries kept missing, want 0", st.missing)
			}
			checkKeyTable(t, st)
		})
	}
	t.Run("client goes", func(t *testing.T) {
		f := newFakeTracer()
		st := New[string](f, oneSet{}, Config{MaxClients: 16, Now: func() time.Time { return t0 }})
		f.st = st
		f.open(1, 100, 0)
		f.open(2, 1, 0)
		sentOfAll(t, st, "a")
		f.vanish(1)
		sentOfAll(t, st, "a")
		if _, kept := st.live[tracer.ConnKey{Cookie: 1}]; !kept {
			t.Fatal("the missing entry was not kept while a's offsets hold it")
		}
		st.RemoveClient("a")
		sentOfAll(t, st, "b") // holds no offset of it
		if _, kept := st.live[tracer.ConnKey{Cookie: 1}]; kept || st.missing != 0 {
			t.Errorf("the missing entry kept (%d) after the client holding it went", st.missing)
		}
		checkKeyTable(t, st)
	})
}

// A new client's first snapshot lists a connection twice (an iterator can
// visit a socket twice), and the connection closes while it is read: its
// traffic since the read counts once (it counted twice: a review's
// finding, older than the offsets).
func TestDuplicateCloseDuringFirstReadCountedOnce(t *testing.T) {
	f := newFakeTracer()
	st := newTestState(f, Config{})
	scrape(t, st, "other")
	f.open(1, 100, 0)
	st.src = &dupTracer{fakeTracer: f}
	f.during = func() { f.add(1, 9, 0); f.close(1) }
	v := scrape(t, st, "new")
	f.during = nil
	if got, want := v.of(1), (sums{Sent: 9, Closed: 1}); got != want {
		t.Errorf("first view: %+v, want %+v", got, want)
	}
}
