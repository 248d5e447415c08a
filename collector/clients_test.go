package collector

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// scrapeFrom is scrape from the scraper address remote.
func scrapeFrom(t *testing.T, h http.Handler, clientID, remote string) samples {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics?"+ClientIDParam+"="+clientID, nil)
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape of %q from %s: status %d: %s", clientID, remote, rec.Code, rec.Body)
	}
	return parseSamples(t, rec.Body.String())
}

// Whoever guesses a Prometheus's client_id and scrapes with it from
// another address gets a client of its own: the Prometheus still gets
// every delta (issue 11.15: the guesser took them).
func TestGuessedClientIDTakesNoDeltas(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false))
	c := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
	src.set(c)
	scrapeFrom(t, h, "prometheus-a", "10.1.0.1:40000")
	src.update(c.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes = 500 })
	stolen := scrapeFrom(t, h, "prometheus-a", "10.9.9.9:50000")
	if got := stolen.sum("conntrace_sent_bytes_total", ""); got != 0 {
		t.Errorf("the guesser got %v bytes, want 0 (a new client)", got)
	}
	s := scrapeFrom(t, h, "prometheus-a", "10.1.0.1:40001")
	if got := s.sum("conntrace_sent_bytes_total", ""); got != 500 {
		t.Errorf("the Prometheus got %v bytes, want 500", got)
	}
}

// The collector holds no client the source dropped (expired or evicted for
// a new one): one-off client_ids do not pile up in the collector until its
// own expiry.
func TestClientsDroppedBySourceAreDropped(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false))
	for _, id := range []string{"a", "b", "c"} {
		mustScrape(t, h, id)
	}
	h.e.state.RemoveClient(cid("a"))
	h.e.state.RemoveClient(cid("b"))
	mustScrape(t, h, "c")
	if n := h.e.state.Clients(); n != 1 {
		t.Errorf("the collector holds %d clients, want 1: the source holds only c", n)
	}
}
