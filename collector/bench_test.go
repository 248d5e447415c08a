package collector

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/conntrace/conntrace_exporter/cgroup"
	"github.com/conntrace/conntrace_exporter/filter"
	"github.com/conntrace/conntrace_exporter/tracer"
)

// staticSource returns the same view on every call: the cost measured is
// the collector's and the handler's, not the source's.
type staticSource struct{ conns *tracer.Connections }

func (s staticSource) Snapshot() (*tracer.Snapshot, error) {
	return &tracer.Snapshot{Conns: refsOf(slices.Clone(s.conns.Conns))}, nil
}
func (staticSource) KTime() uint64       { return 0 }
func (staticSource) SetSink(tracer.Sink) {}
func (s staticSource) Names(addrs []netip.Addr) map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for _, a := range addrs {
		if n, ok := s.conns.DNS[a]; ok {
			out[a] = n
		}
	}
	return out
}
func (staticSource) Stats() tracer.Stats                            { return tracer.Stats{Lost: map[string]uint64{}} }
func (staticSource) Listeners() ([]tracer.ListenerStats, error)     { return nil, nil }
func (staticSource) PortResets() ([]tracer.PortResets, bool, error) { return nil, false, nil }
func (staticSource) JiffyMicros() uint64                            { return 4000 }
func (staticSource) Cgroup(uint64) (cgroup.Info, bool)              { return cgroup.Info{}, false }

// refsOf points at each connection of conns, as a snapshot does.
func refsOf(conns []tracer.ConnectionStats) []*tracer.ConnectionStats {
	out := make([]*tracer.ConnectionStats, len(conns))
	for i := range conns {
		out[i] = &conns[i]
	}
	return out
}

// benchConns returns n TCP connections with deltas in every counter, spread
// over the given number of label sets (remote addresses).
func benchConns(n, labelSets int) *tracer.Connections {
	out := &tracer.Connections{Conns: make([]tracer.ConnectionStats, n)}
	for i := range out.Conns {
		r := i % labelSets
		c := &out.Conns[i]
		*c = tracer.ConnectionStats{
			Key:         tracer.ConnKey{Cookie: uint64(i)},
			Type:        tracer.TCP,
			Family:      tracer.AFINET,
			Direction:   tracer.OUTGOING,
			Source:      netip.MustParseAddr("10.0.0.1"),
			SPort:       uint16(32768 + i%28000),
			Dest:        netip.AddrFrom4([4]byte{10, 1, byte(r >> 8), byte(r)}),
			DPort:       443,
			Established: true,
			StartEpoch:  1,
			Monotonic:   tracer.Counters{SentBytes: 1000, RecvBytes: 2000, Retransmits: 1},
		}
		c.Monotonic.RTT.Buckets[10] = 3
		c.Monotonic.RTT.SumMicros = 3000
	}
	return out
}

// BenchmarkScrape10k serves whole scrapes of 10,000 connections through the
// handler (exporter metrics included), text format.
func BenchmarkScrape10k(b *testing.B) {
	for _, labelSets := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("labelsets=%d", labelSets), func(b *testing.B) {
			benchServe(b, NewHandler(staticSource{benchConns(10_000, labelSets)}))
		})
	}
}

// BenchmarkScrape2000Series serves whole scrapes of a client with 2,000
// series (the default --collector.max-series), one connection each,
// through the handler (exporter metrics included), text format: the
// scrape issue 12 bounds at 50 ms.
func BenchmarkScrape2000Series(b *testing.B) {
	b.Run("identity", func(b *testing.B) { benchServe(b, NewHandler(staticSource{benchConns(2000, 2000)})) })
	// As Prometheus asks: gzip.
	b.Run("gzip", func(b *testing.B) {
		benchServeWith(b, NewHandler(staticSource{benchConns(2000, 2000)}), "gzip")
	})
}

// benchPeers returns n TCP connections as benchConns does, each to a peer
// of its own: 10.0.0.0/16 and up (n up to 2^24).
func benchPeers(n int) *tracer.Connections {
	out := benchConns(n, 1)
	for i := range out.Conns {
		out.Conns[i].Dest = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	return out
}

// benchScrape100k measures scrapes of 100,000 connections to 100,000
// distinct peers: "http" serves the whole scrape through the handler
// (exporter metrics included, text format), "collect" only aggregates the
// view into the client's series and makes the metrics.
func benchScrape100k(b *testing.B, opts ...Option) {
	src := staticSource{benchPeers(100_000)}
	b.Run("http", func(b *testing.B) { benchServe(b, NewHandler(src, opts...)) })
	b.Run("collect", func(b *testing.B) {
		o := defaultOptions()
		for _, opt := range opts {
			opt(&o)
		}
		e := newExporter(src, &o)
		b.ReportAllocs()
		var n int
		for b.Loop() {
			ms, err := e.scrape("bench")
			if err != nil {
				b.Fatal(err)
			}
			n = len(ms)
		}
		b.ReportMetric(float64(e.state.GetStats()["clients"].(map[string]any)["bench"].(map[string]int64)["series"]), "series")
		b.ReportMetric(float64(n), "metrics")
	})
}

// BenchmarkScrape100kDefaultLabels: the default labels, so 100,000 label
// sets, capped at the default --collector.max-series (2,000 series and
// the overflow series).
func BenchmarkScrape100kDefaultLabels(b *testing.B) {
	benchScrape100k(b)
}

// BenchmarkScrape100kAggregatedLabels: --collector.labels=protocol,direction,port:
// one label set.
func BenchmarkScrape100kAggregatedLabels(b *testing.B) {
	benchScrape100k(b, WithLabels(MustParseLabels("protocol,direction,port")))
}

// BenchmarkScrape100kAddressGroups: the default labels and two address
// groups (the file's index) that hold every peer: two label sets.
func BenchmarkScrape100kAddressGroups(b *testing.B) {
	fc, err := filter.ParseConfigFile([]byte("address_groups: [10.0.0.0/16, 10.1.0.0/16, 192.0.2.0/24, 2001:db8::/32]\n"), "bench.yml")
	if err != nil {
		b.Fatal(err)
	}
	benchScrape100k(b, WithAddressGroups(fc.Group))
}

// benchServe times whole scrapes of one client through h.
func benchServe(b *testing.B, h http.Handler) { benchServeWith(b, h, "") }

// benchServeWith is benchServe with an Accept-Encoding.
func benchServeWith(b *testing.B, h http.Handler, encoding string) {
	req := httptest.NewRequest(http.MethodGet, "/metrics?client_id=bench", nil)
	if encoding != "" {
		req.Header.Set("Accept-Encoding", encoding)
	}
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
}

// BenchmarkKeyPerConnection: the label set of one connection (once per
// connection: a live one's is kept, BENCHMARKS.md §16), with the default
// labels and with the four workload labels too, named by a real resolver
// (a walk of a directory tree standing in for the cgroup hierarchy: 64
// cgroups, the connections spread over them).
func BenchmarkKeyPerConnection(b *testing.B) {
	root := b.TempDir()
	var ids []uint64
	for i := range 64 {
		dir := filepath.Join(root, "kubepods.slice", fmt.Sprintf("kubepods-burstable-pod%08x_aaaa_bbbb_cccc_0123456789ab.slice", i),
			fmt.Sprintf("cri-containerd-%064x.scope", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, st.Ino)
	}
	r := cgroup.NewResolver(cgroup.Config{Root: root})
	if err := r.Scan(); err != nil {
		b.Fatal(err)
	}
	conns := benchPeers(4096).Conns
	for i := range conns {
		conns[i].Cgroup = ids[i%len(ids)]
	}
	for _, tc := range []struct{ name, labels string }{
		{"default", DefaultLabels},
		{"workload", DefaultLabels + ",cgroup,unit,container_id,pod_uid"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := keyMaker{labels: MustParseLabels(tc.labels), cgroups: r.Lookup}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := m.key(&conns[i%len(conns)])
				if k.port != 443 && k.port != 0 {
					b.Fatal(k)
				}
				i++
			}
		})
	}
	if s := r.Stats(); s.Misses != 0 {
		b.Fatalf("%d misses", s.Misses)
	}
}
