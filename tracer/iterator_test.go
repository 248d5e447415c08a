package tracer

import (
	"io"
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// Each TCP iterator, asked for: where this kernel's verifier takes it, the
// tracer starts with it and counts exactly through it (a connection that
// existed before start-up, found by its seeding pass, then traffic read
// live and at close); where it does not, start-up fails naming the setting
// and why. On a kernel that takes both (Linux 6.1 and later in the
// matrix), iter/tcp's live read costs the sockets, not the host's open
// files (--tracer.tcp-iterator=tcp).
func TestTCPIteratorForced(t *testing.T) {
	nettest.RequireRoot(t)
	for _, it := range []string{TCPIteratorTaskFile, TCPIteratorTCP} {
		t.Run(it, func(t *testing.T) {
			possible := TCPIteratorPossible(it)
			if possible != nil {
				// Refused, or no TCP on this kernel at all (before 5.12):
				// start-up stops, naming the setting.
				cfg := NewDefaultConfig()
				cfg.TCPIterator = it
				tr, err := New(cfg, log.NewNopLogger())
				switch {
				case err == nil:
					tr.Close()
					t.Fatalf("started with %s, which the kernel does not offer (%v)", it, possible)
				case !strings.Contains(err.Error(), "TCPIterator "+it+":"):
					t.Fatalf("error does not name the setting: %v", err)
				}
				t.Logf("%s: %v", it, possible)
				return
			}
			p := nettest.NewPair(t)
			ln, port := listen(t, p, false)
			cc, sc := exchange(t, p, ln, 4444, 333, true) // before the tracer
			defer cc.Close()
			defer sc.Close()
			tr := newTestTracer(t, func(c *Config) { c.TCPIterator = it })
			if tr.tcpIter != it {
				t.Fatalf("started with the %s iterator, want %s", tr.tcpIter, it)
			}
			o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
			if o.tot["client"].preexisting != 1 || o.tot["server"].preexisting != 1 {
				t.Fatalf("pre-existing connection not found at start-up: %s", o.dump())
			}
			if _, err := cc.Write(make([]byte, 2000)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(io.Discard, sc, 2000); err != nil {
				t.Fatal(err)
			}
			o.waitFor("traffic read live", func(tot map[string]*kTotals) bool {
				return tot["client"].sent == 2000 && tot["server"].recv == 2000
			})
			// A new connection, read live and at close.
			exchange(t, p, ln, 123456, 789, false)
			cc.Close()
			io.Copy(io.Discard, sc)
			sc.Close()
			o.waitFor("close records", func(tot map[string]*kTotals) bool {
				return tot["client"].closedSeen == 2 && tot["server"].closedSeen == 2
			})
			for side, want := range map[string][2]uint64{"client": {2000 + 123456, 789}, "server": {789, 2000 + 123456}} {
				tt := o.tot[side]
				if tt.sent != want[0] || tt.recv != want[1] || len(tt.conns) != 2 {
					t.Errorf("%s: sent=%d recv=%d over %d connections, want sent=%d recv=%d over 2", side, tt.sent, tt.recv, len(tt.conns), want[0], want[1])
				}
				if tt.opened != 1 || tt.closed != 2 {
					t.Errorf("%s: opened=%d closed=%d, want 1 2 (the older one opened before the tracer)", side, tt.opened, tt.closed)
				}
			}
		})
	}
}
