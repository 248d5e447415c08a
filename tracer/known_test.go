package tracer

import (
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// mkConn returns an established TCP connection with the given cookie and totals.
func mkConn(cookie uint64, sent, recv uint64) ConnectionStats {
	return ConnectionStats{
		Source:      netip.MustParseAddr("10.0.0.1"),
		Dest:        netip.MustParseAddr("10.0.0.2"),
		SPort:       40000,
		DPort:       443,
		Key:         ConnKey{Cookie: cookie},
		Monotonic:   Counters{SentBytes: sent, RecvBytes: recv},
		Established: true,
		Direction:   OUTGOING,
	}
}

// startedAt is c with the kernel time the tracer first saw it.
func startedAt(c ConnectionStats, epoch uint64) ConnectionStats {
	c.StartEpoch = epoch
	return c
}

// last is what a client older than every connection counts of them.
type last struct{ Sent, Recv, Opened, Closed uint64 }

func (l *last) add(c *ConnectionStats) {
	opened, closed, _ := c.Lifecycle()
	l.Sent += c.Monotonic.SentBytes
	l.Recv += c.Monotonic.RecvBytes
	l.Opened += uint64(bit32(opened))
	l.Closed += uint64(bit32(closed))
}

// knownFlow runs known the way the tracer does (see readActive and
// drainClosed) for one client older than every connection: its view is
// what left (closed or expired, given to the sink) plus the live
// connections' totals, as netstate sums them.
type knownFlow struct {
	t       *testing.T
	k       *known
	now     time.Time
	epoch   uint64
	timeout time.Duration
	left    last // what the sink got
	sum     last // the view at the last read
}

func newKnownFlow(t *testing.T, maxEntries int) *knownFlow {
	return &knownFlow{t: t, k: newKnown(maxEntries), now: t0, timeout: time.Minute}
}

// read reads the live connections given, as readActive, and computes the
// view.
func (f *knownFlow) read(live ...ConnectionStats) {
	f.t.Helper()
	f.k.beginRead()
	var conns []*ConnectionStats
	for _, c := range live {
		if p := f.k.live(&c, f.now); p != nil {
			conns = append(conns, p)
		}
	}
	conns, expired := f.k.endRead(conns, f.now, f.timeout)
	for i := range expired {
		f.left.add(&expired[i])
	}
	f.epoch += 10
	f.sum = f.left
	for _, c := range conns {
		f.sum.add(c)
	}
}

// closed drains a close record, as drainClosed.
func (f *knownFlow) closed(c ConnectionStats) {
	c.Closed = true
	c.LastUpdateEpoch = f.epoch + 1
	f.k.closed(&c, f.now)
	f.left.add(&c)
}

// An orphan (a socket closed by its process while it still drains to a slow
// peer: no reader visits it) that outlives --tracer.tcp-conn-timeout stops
// being reported; when its close record arrives, only what is new is
// counted, and it is not opened again (issue 11.3: it was counted again
// from zero, opened twice).
func TestOrphanPastTimeoutCountedOnce(t *testing.T) {
	f := newKnownFlow(t, 100)
	c := startedAt(mkConn(1, 1000, 10), f.epoch+1)
	f.read(c)
	f.now = f.now.Add(time.Second)
	f.read() // orphaned: reported with its last values
	f.now = f.now.Add(2 * time.Minute)
	f.read() // past the timeout: forgotten
	c.Monotonic.SentBytes = 1500
	f.closed(c)
	f.now = f.now.Add(time.Second)
	f.read()
	if want := (last{Sent: 1500, Recv: 10, Opened: 1, Closed: 1}); f.sum != want {
		t.Errorf("totals %+v, want %+v", f.sum, want)
	}
}

// A socket not yet accepted for longer than the timeout (no process holds
// it, so no reader visits it), then accepted: its traffic is counted once,
// and it is opened once (issue 11.3).
func TestAcceptedPastTimeoutCountedOnce(t *testing.T) {
	f := newKnownFlow(t, 100)
	c := startedAt(mkConn(1, 0, 300), f.epoch+1)
	f.read(c)
	f.now = f.now.Add(2 * time.Minute)
	f.read() // waiting in the accept queue: forgotten
	c.Monotonic.RecvBytes = 400
	f.read(c) // accepted: a reader visits it again
	c.Monotonic.RecvBytes = 450
	f.closed(c)
	f.read()
	if want := (last{Recv: 450, Opened: 1, Closed: 1}); f.sum != want {
		t.Errorf("totals %+v, want %+v", f.sum, want)
	}
}

// A socket unvisited past the timeout twice (expired, visited again,
// expired again), then closed: each return counts only what is new, from
// what was reported before it expired, the second time too (the base of
// the second expiry is the kernel's totals, not the rebased values).
func TestExpiredTwiceCountedOnce(t *testing.T) {
	f := newKnownFlow(t, 100)
	c := startedAt(mkConn(1, 100, 10), f.epoch+1)
	f.read(c)
	for _, sent := range []uint64{300, 700} {
		f.now = f.now.Add(2 * time.Minute)
		f.read() // not visited: past the timeout, forgotten
		c.Monotonic.SentBytes = sent
		f.read(c) // visited again
	}
	f.now = f.now.Add(2 * time.Minute)
	f.read() // a third expiry
	c.Monotonic.SentBytes = 1000
	f.closed(c)
	f.read()
	if want := (last{Sent: 1000, Recv: 10, Opened: 1, Closed: 1}); f.sum != want {
		t.Errorf("totals %+v, want %+v", f.sum, want)
	}
	if len(f.k.bases) != 0 {
		t.Errorf("%d bases kept after the close", len(f.k.bases))
	}
}

// A closed connection's entry, kept during a read against that read's
// stale record, is never evicted to make room: else the stale record made
// a new live entry, reported by every later read and folded a second time
// when it expired (review of issue 12).
func TestClosedEntryNotEvictedDuringRead(t *testing.T) {
	now := time.Now()
	k := newKnown(2)
	z := ConnectionStats{Key: ConnKey{Cookie: 1}, Monotonic: Counters{SentBytes: 1}}
	x := ConnectionStats{Key: ConnKey{Cookie: 2}, Monotonic: Counters{SentBytes: 500}}
	y := ConnectionStats{Key: ConnKey{Cookie: 3}, Monotonic: Counters{SentBytes: 9}}
	k.beginRead()
	k.live(&z, now)
	k.endRead(nil, now, time.Minute)

	k.startRead() // the iterator sees x still open
	xc, yc := x, y
	xc.Closed, yc.Closed = true, true
	k.closed(&xc, now) // x's close drained during the read
	k.closed(&yc, now) // another one: known is full
	k.beginRead()
	zr, xr := z, x
	k.live(&zr, now)
	if k.live(&xr, now) != nil {
		t.Error("the read's stale record of the closed x was taken as live")
	}
	k.endRead(nil, now, time.Minute)
	k.startRead()
	k.beginRead()
	zr = z
	k.live(&zr, now)
	live, _ := k.endRead(nil, now, time.Minute)
	for _, c := range live {
		if c.Key == x.Key {
			t.Error("the closed x is reported live again")
		}
	}
}

// A snapshot points at known's entries: a close drained while a snapshot
// is in use (the drain runs beside netstate's step) leaves the values the
// snapshot reads as the read left them; the close's own record is clamped
// against them all the same.
func TestClosedLeavesTheSnapshotsValues(t *testing.T) {
	k := newKnown(10)
	now := t0
	key := ConnKey{Cookie: 5}
	k.startRead()
	k.beginRead()
	p := k.live(&ConnectionStats{Key: key, Monotonic: Counters{SentBytes: 100, RecvBytes: 7}}, now)
	live, _ := k.endRead(nil, now, time.Minute)
	if p == nil || len(live) != 0 {
		t.Fatalf("live read: %v, %d unvisited", p, len(live))
	}
	final := ConnectionStats{Key: key, Closed: true, Monotonic: Counters{SentBytes: 90, RecvBytes: 9}}
	if !k.closed(&final, now) {
		t.Error("the close of a connection read live says it was not")
	}
	if p.Monotonic.SentBytes != 100 || p.Monotonic.RecvBytes != 7 || p.Closed {
		t.Errorf("the snapshot's values changed under it: %+v", p.Monotonic)
	}
	if final.Monotonic.SentBytes != 100 || final.Monotonic.RecvBytes != 9 {
		t.Errorf("the close record was not clamped against the read: %+v", final.Monotonic)
	}
}

// The entries' clock starts at the first time given: a clock far from the
// wall clock's now (a zero time.Time) still expires what it should (with
// time.Now() as its origin, every entry saw the same saturated time, and
// none expired: a review's finding).
func TestExpiryWithAFarClock(t *testing.T) {
	f := newKnownFlow(t, 100)
	f.now = time.Time{}
	c := startedAt(mkConn(1, 1000, 10), f.epoch+1)
	f.read(c)
	f.now = f.now.Add(3 * time.Minute)
	f.read() // past the timeout: expired, counted as left
	if f.k.expiredN != 1 {
		t.Errorf("%d expired, want 1", f.k.expiredN)
	}
}
