package collector

import (
	"net/http"
	"testing"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// A process name that is not valid UTF-8 (prctl(PR_SET_NAME, "\xff"), or the
// kernel cutting a multi-byte name at 15 bytes) is a label value: it must
// not fail the scrape, then or later, and its traffic is still counted,
// under the name with each invalid byte replaced by U+FFFD (issue 11.1).
func TestInvalidUTF8ProcessName(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false), WithLabels(MustParseLabels("protocol,process")))
	mustScrape(t, h, "c")
	c := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
	c.Comm = "caf\xc3" // "café" cut inside its last character
	c.Monotonic.SentBytes = 1234
	src.set(c)
	for i := range 2 { // the second scrape too: nothing poisoned
		code, body := scrape(t, h, "c")
		if code != http.StatusOK {
			t.Fatalf("scrape %d: status %d: %s", i+1, code, body)
		}
	}
	s := mustScrape(t, h, "c")
	if got := s.find(t, "conntrace_sent_bytes_total", map[string]string{"process": "caf\uFFFD"}); got != 1234 {
		t.Errorf("sent bytes of process %q = %v, want 1234", "caf\uFFFD", got)
	}
}
