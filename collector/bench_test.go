package collector

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// staticSource returns the same view on every call: the cost measured is
// the collector's and the handler's, not the source's.
type staticSource struct{ conns *tracer.Connections }

func (s staticSource) GetActiveConnections(string) (*tracer.Connections, error) { return s.conns, nil }
func (staticSource) RemoveClient(string)                                        {}
func (staticSource) Stats() tracer.Stats                                        { return tracer.Stats{} }

// benchConns returns n TCP connections with deltas in every counter, spread
// over the given number of label sets (remote addresses).
func benchConns(n, labelSets int) *tracer.Connections {
	out := &tracer.Connections{Conns: make([]tracer.ConnectionStats, n)}
	for i := range out.Conns {
		r := i % labelSets
		c := &out.Conns[i]
		*c = tracer.ConnectionStats{
			Key:             tracer.ConnKey{Cookie: uint64(i)},
			Type:            tracer.TCP,
			Family:          tracer.AFINET,
			Direction:       tracer.OUTGOING,
			Source:          netip.MustParseAddr("10.0.0.1"),
			SPort:           uint16(32768 + i%28000),
			Dest:            netip.AddrFrom4([4]byte{10, 1, byte(r >> 8), byte(r)}),
			DPort:           443,
			Established:     true,
			LastSentBytes:   1000,
			LastRecvBytes:   2000,
			LastRetransmits: 1,
		}
		c.LastRTT.Buckets[10] = 3
		c.LastRTT.SumMicros = 3000
	}
	return out
}

// BenchmarkScrape10k serves whole scrapes of 10,000 connections through the
// handler (exporter metrics included), text format.
func BenchmarkScrape10k(b *testing.B) {
	for _, labelSets := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("labelsets=%d", labelSets), func(b *testing.B) {
			h := NewHandler(staticSource{benchConns(10_000, labelSets)})
			req := httptest.NewRequest(http.MethodGet, "/metrics?client_id=bench", nil)
			b.ReportAllocs()
			var size int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
				size = rec.Body.Len()
				io.Copy(io.Discard, rec.Body)
			}
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
}
