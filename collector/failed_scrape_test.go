package collector

import (
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// A failure inside one scrape (here a panic in the address grouper, code
// that runs for every connection of the view) must neither kill the process
// nor leave the client's series half-updated: the scrape fails with a 500,
// the client restarts on both sides (the tracer had already handed the
// deltas over), the restart is counted in lost_total{reason="scrape_failed"},
// and the next scrape is whole again (issue 11.1).
func TestFailedScrapeRestartsClient(t *testing.T) {
	src := newFakeSource()
	var armed atomic.Bool
	group := func(a netip.Addr) (netip.Prefix, bool) {
		if armed.Load() && a == netip.MustParseAddr("192.0.2.2") {
			panic("grouper failed")
		}
		return netip.Prefix{}, false
	}
	h := NewHandler(src, WithExporterMetrics(false), WithAddressGroups(group))
	a := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
	b := conn(2, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40001", "192.0.2.2:443")
	src.set(a)
	src.set(b)
	mustScrape(t, h, "c")
	src.update(a.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes = 100 })
	src.update(b.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes = 200 })
	s := mustScrape(t, h, "c")
	if got := s.sum("conntrace_sent_bytes_total", ""); got != 300 {
		t.Fatalf("sent bytes before the failure = %v, want 300", got)
	}

	src.update(a.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes = 1100 })
	// The label set of a connection is made once, when the state first
	// sees it: a new connection to the failing peer fails the scrape.
	armed.Store(true)
	src.set(conn(3, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40002", "192.0.2.2:443"))
	code, body := scrape(t, h, "c")
	if code != http.StatusInternalServerError {
		t.Fatalf("failed scrape: status %d, want 500; body:\n%s", code, body)
	}
	armed.Store(false)
	if h.e.state.HasClient(cid("c")) {
		t.Errorf("client c is still held after its scrape failed")
	}

	// The client restarted: a new client's first view, all counters zero
	// (Prometheus sees a counter reset), then deltas again.
	s = mustScrape(t, h, "c")
	if got := s.sum("conntrace_sent_bytes_total", ""); got != 0 {
		t.Errorf("sent bytes after the restart = %v, want 0 (a new client)", got)
	}
	if got := s.get(t, `conntrace_lost_total{reason="scrape_failed"}`); got != 1 {
		t.Errorf(`lost_total{reason="scrape_failed"} = %v, want 1`, got)
	}
	src.update(b.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes = 250 })
	s = mustScrape(t, h, "c")
	if got := s.sum("conntrace_sent_bytes_total", ""); got != 50 {
		t.Errorf("sent bytes after the restart and 50 more = %v, want 50", got)
	}
}
