package tracer

import (
	"errors"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// A connection that a new client's first read sees live, and that closes
// before the drain that follows the read, is reported closed to that
// client: in its first view, once (issue 11.5). Before, the client was made
// after the drain, so the close record went to the clients that existed
// then, and the new client held a baseline of a connection that never
// closed for it.
func TestNewClientSeesCloseDuringFirstRead(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	cc, sc := exchange(t, p, ln, 1000, 2000, true)
	tr.afterRead = func() {
		cc.Close()
		sc.Close()
		// Both close records in the ring buffer before the drain.
		const both = 2 * (recordSize + 8) // a sample and its header
		deadline := time.Now().Add(5 * time.Second)
		for tr.closedRd.AvailableBytes() < both {
			if time.Now().After(deadline) {
				t.Errorf("the close records did not reach the ring buffer in 5s (%d bytes there)", tr.closedRd.AvailableBytes())
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port)) // the first call
	tr.afterRead = nil
	o.poll()
	o.poll()
	for _, side := range []string{"client", "server"} {
		tt := o.tot[side]
		if len(tt.conns) != 1 || tt.closedSeen != 1 || tt.closed != 1 || tt.opened != 0 {
			t.Errorf("%s: %d connections, %d close records, closed=%d opened=%d; want 1, 1, 1, 0 (opened before the client)\n%s",
				side, len(tt.conns), tt.closedSeen, tt.closed, tt.opened, o.dump())
		}
		if tt.sent != 0 || tt.recv != 0 {
			t.Errorf("%s: sent=%d recv=%d, want 0 0 (all before the client's first read)", side, tt.sent, tt.recv)
		}
	}
}

// A new client refused (MaxClients held, none evictable) is refused before
// the kernel is read: a refused request costs nothing (issue 11.15: it
// paid a full read first).
func TestRefusedClientNotRead(t *testing.T) {
	nettest.RequireRoot(t)
	tr := newTestTracer(t, func(c *Config) {
		c.MaxClients = 1
		c.CollectTCPConns = TCPPossible() == nil // the refusal needs no TCP
	})
	reads := 0
	tr.afterRead = func() { reads++ }
	for range 2 { // a client that comes back is not evicted
		if _, err := tr.GetActiveConnections("prometheus"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := tr.GetActiveConnections("other")
	if !errors.Is(err, ErrTooManyClients) {
		t.Fatalf("a second client with MaxClients 1: err %v, want ErrTooManyClients", err)
	}
	if reads != 2 {
		t.Errorf("%d reads of the kernel, want 2: the refused client read it too", reads)
	}
}
