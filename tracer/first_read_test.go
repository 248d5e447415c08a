package tracer

import (
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
	o.waitFor("both close records", func(tot map[string]*kTotals) bool {
		return tot["client"].closedSeen == 1 && tot["server"].closedSeen == 1
	})
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
