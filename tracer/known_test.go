package tracer

import (
	"testing"
	"time"
)

// knownFlow runs known and a NetworkState the way the tracer does (see
// readActive and drainClosed), for one client whose deltas it sums.
type knownFlow struct {
	t       *testing.T
	k       *known
	ns      NetworkState
	now     time.Time
	epoch   uint64
	timeout time.Duration
	sum     last
}

func newKnownFlow(t *testing.T, maxEntries int) *knownFlow {
	f := &knownFlow{t: t, k: newKnown(maxEntries), ns: NewNetworkState(testConfig()), now: t0, timeout: time.Minute}
	f.read() // the client's first call
	return f
}

// read reads the live connections given, as readActive, then makes the
// client's call and adds its deltas.
func (f *knownFlow) read(live ...ConnectionStats) {
	f.t.Helper()
	f.k.beginRead()
	var conns []ConnectionStats
	for _, c := range live {
		if f.k.live(&c, f.now) {
			conns = append(conns, c)
		}
	}
	conns = f.k.endRead(conns, f.now, f.timeout) // as readActive
	f.epoch += 10
	for _, c := range callAt(f.t, f.ns, "A", f.now, f.epoch, conns...) {
		f.sum.Sent += c.LastSentBytes
		f.sum.Recv += c.LastRecvBytes
		f.sum.Opened += c.LastOpened
		f.sum.Closed += c.LastClosed
	}
}

// closed drains a close record, as drainClosed.
func (f *knownFlow) closed(c ConnectionStats) {
	c.Closed = true
	c.LastUpdateEpoch = f.epoch + 1
	f.k.closed(&c, f.now)
	f.ns.StoreClosedConnection(c)
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
	c.MonotonicSentBytes = 1500
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
	c.MonotonicRecvBytes = 400
	f.read(c) // accepted: a reader visits it again
	c.MonotonicRecvBytes = 450
	f.closed(c)
	f.read()
	if want := (last{Recv: 450, Opened: 1, Closed: 1}); f.sum != want {
		t.Errorf("totals %+v, want %+v", f.sum, want)
	}
}

// A connection that expires in one client's read while another client's
// read, made just before, still reports it: the second client's call
// counts nothing again (review of issue 11.3: the expiry removed every
// client's baseline, so that call reported the whole totals and an opening).
func TestExpiryBetweenAnotherClientsReadAndCall(t *testing.T) {
	cfg := testConfig()
	cfg.ClientStateExpiry = time.Hour
	k, ns := newKnown(100), NewNetworkState(cfg)
	now := t0
	read := func() []ConnectionStats { // as readActive
		k.beginRead()
		return k.endRead(nil, now, time.Minute)
	}
	c := startedAt(mkConn(1, 1000, 10), 5)
	k.beginRead()
	k.live(&c, now)
	k.endRead(nil, now, time.Minute)
	for _, id := range []string{"A", "B"} {
		callAt(t, ns, id, now, 1)
		callAt(t, ns, id, now, 2, c)
	}
	now = now.Add(59 * time.Second)
	aView := read() // A's read: the orphan, with its last values
	now = now.Add(2 * time.Second)
	read() // B's read: past the timeout, it expires
	got := callAt(t, ns, "A", now, 3, aView...)
	if c := got[key(1)]; lastOf(c) != (last{}) {
		t.Errorf("A's call after B's read expired the connection: %+v, want no delta", lastOf(c))
	}
}
