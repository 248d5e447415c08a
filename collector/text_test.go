package collector

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// The text path writes what the registry path gives, byte for byte: the
// golden scenario and every label, process names and DNS names with
// quotes, backslashes, newlines and invalid UTF-8, the overflow series and
// names past the cap, UDP label sets without the TCP metrics.
func TestTextMatchesRegistry(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"default labels", nil},
		{"every label, cap 3", []Option{WithLabels(MustParseLabels("protocol,family,direction,remote_addr,port,process,pid,netns,local_addr,nat_remote_addr")), WithMaxSeries(3)}},
		{"no label", []Option{WithLabels(Labels{})}},
		{"process only", []Option{WithLabels(MustParseLabels("process"))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource()
			next := goldenScenario(src)
			for i, comm := range []string{`a"b`, `back\slash`, "new\nline", "bad\xffutf8", "overflow", "a b", "a"} {
				c := conn(uint64(100+i), tracer.TCP, tracer.OUTGOING, "10.0.0.1:41000", "192.0.2.50:9000")
				c.Comm = comm
				c.Monotonic.SentBytes = uint64(1000 * (i + 1))
				src.set(c)
			}
			src.names = map[netip.Addr][]string{
				netip.MustParseAddr("192.0.2.50"): {`x"y.example`, "b.example", "a\\b.example", "z\xfe.example"},
				netip.MustParseAddr("192.0.2.10"): {"svc.example"},
			}
			h := NewHandler(src, append(tc.opts, WithExporterMetrics(false))...)
			for round := range 2 {
				v, dns, err := h.e.view("c")
				if err != nil {
					t.Fatal(err)
				}
				// The text path.
				req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				rec := httptest.NewRecorder()
				hh := h.Handler.(*handler)
				hh.serveText(rec, req, expfmt.Negotiate(req.Header), v, dns)
				// The registry path, on the same view.
				reg := prometheus.NewRegistry()
				reg.MustRegister(scrapedCollector{descs: h.e.descs, metrics: h.e.metrics(v, dns)})
				mfs, err := prometheus.Gatherers{reg, hh.shared}.Gather()
				if err != nil {
					t.Fatal(err)
				}
				var want bytes.Buffer
				enc := expfmt.NewEncoder(&want, expfmt.Negotiate(req.Header))
				for _, mf := range mfs {
					if err := enc.Encode(mf); err != nil {
						t.Fatal(err)
					}
				}
				if got := rec.Body.String(); got != want.String() {
					t.Fatalf("the text path differs from the registry's:\n%s", firstDiff(want.String(), got))
				}
				if round == 0 {
					next()
				}
			}
		})
	}
}

// A scraper that accepts gzip gets gzip; the body is the same.
func TestTextGzip(t *testing.T) {
	src := newFakeSource()
	goldenScenario(src)
	h := NewHandler(src, WithExporterMetrics(false))
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("status %d, Content-Encoding %q", rec.Code, rec.Header().Get("Content-Encoding"))
	}
}

// firstDiff shows the first line that differs (lineDiff ignores order).
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, wl, gl)
		}
	}
	return "(same lines)"
}
