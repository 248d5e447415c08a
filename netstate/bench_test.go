package netstate

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// byPeer labels connections by remote address, as the default labels do
// (the label set: one comparable value, no string per connection).
type byPeer struct{}

func (byPeer) Key(c *tracer.ConnectionStats) netip.Addr { return c.Dest }
func (byPeer) Values(k netip.Addr) []string             { return []string{k.String()} }
func (byPeer) Overflow() []string                       { return []string{"overflow"} }
func (byPeer) Text(v []string) string                   { return v[0] }

// closedBatch returns n closed connections to peers distinct peers, as the
// drain hands them over (1,024 at most at once).
func closedBatch(n, peers int, cookie uint64) []tracer.ConnectionStats {
	out := make([]tracer.ConnectionStats, n)
	for i := range out {
		p := i % peers
		out[i] = tracer.ConnectionStats{
			Key: tracer.ConnKey{Cookie: cookie + uint64(i)}, Type: tracer.TCP, Direction: tracer.OUTGOING,
			Source: netip.MustParseAddr("10.0.0.1"), Dest: netip.AddrFrom4([4]byte{10, 1, byte(p >> 8), byte(p)}),
			SPort: 40000, DPort: 443, Established: true, Closed: true,
			Monotonic:  tracer.Counters{SentBytes: 100, RecvBytes: 100, SentSegments: 2},
			StartEpoch: 1_000_000, LastUpdateEpoch: 2_000_000,
		}
	}
	return out
}

// BenchmarkFold measures the drain's side of the state: folding closed
// connections into every client's series (ns/op is per connection). With
// 16 clients a connection is folded 16 times; nothing is allocated per
// connection in the steady state.
func BenchmarkFold(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			f := newFakeTracer()
			st := New[netip.Addr](f, byPeer{}, Config{MaxClients: 64, MaxSeries: 2000})
			f.st = st
			for i := range clients {
				if _, err := st.Scrape(fmt.Sprintf("c%d@10.9.0.%d", i, i), t0); err != nil {
					b.Fatal(err)
				}
			}
			batch := closedBatch(1024, 500, 1)
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				st.Closed(batch[n%1024 : n%1024+1])
				n++
			}
		})
	}
}

// BenchmarkScrape2000Series measures a scrape's step and view for a client
// with 2,000 series (one live connection each), the snapshot excluded
// (the fake's copy is measured with it).
func BenchmarkScrape2000Series(b *testing.B) {
	f := newFakeTracer()
	st := New[netip.Addr](f, byPeer{}, Config{MaxClients: 16, MaxSeries: 2000})
	f.st = st
	for i := range 2000 {
		c := closedBatch(1, 1, uint64(i+1))[0]
		c.Closed = false
		c.Dest = netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		f.active[c.Key] = c
	}
	if _, err := st.Scrape("bench", t0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var series int
	for b.Loop() {
		v, err := st.Scrape("bench", t0)
		if err != nil {
			b.Fatal(err)
		}
		series = len(v.Series)
	}
	b.ReportMetric(float64(series), "series")
}

// staticSnap hands the same snapshot to every scrape, without a copy:
// what is measured is the state's step.
type staticSnap struct{ snap *tracer.Snapshot }

func (s *staticSnap) Snapshot() (*tracer.Snapshot, error) { return s.snap, nil }
func (s *staticSnap) KTime() uint64                       { return 1000 }

// BenchmarkScrape100kLive measures a scrape's step and view with 100,000
// live connections to 500 peers (500 series), steady: what the state adds
// to a scrape at scale, and what the drain waits for at most while a
// scrape steps (the step holds the state's lock). clients=16: the 16
// clients scrape in turn.
func BenchmarkScrape100kLive(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			src := &staticSnap{snap: &tracer.Snapshot{}}
			st := New[netip.Addr](src, byPeer{}, Config{MaxClients: 64, MaxSeries: 2000})
			scrapeEach(b, st, clients)
			// Newer than the clients: not in their offsets.
			src.snap.Conns = liveBatch(func(i int) uint64 { return uint64(1_000_000_000 + i) })
			b.ReportAllocs()
			scrapeInTurn(b, st, clients)
		})
	}
}

// BenchmarkScrape100kOlder is BenchmarkScrape100kLive with connections
// older than the clients: each client's first scrape finds the 100,000
// (a Prometheus that comes to a busy node). It reports what the clients
// keep for them (heap-B/client: the live heap after a collection, with
// the clients less without them, per client) and a steady scrape.
func BenchmarkScrape100kOlder(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			src := &staticSnap{snap: &tracer.Snapshot{}}
			st := New[netip.Addr](src, byPeer{}, Config{MaxClients: 64, MaxSeries: 2000})
			src.snap.Conns = liveBatch(func(i int) uint64 { return uint64(1 + i%500) }) // older than the clients
			if _, err := st.Scrape("warm@10.9.1.1", t0); err != nil {                   // the shared table, built once
				b.Fatal(err)
			}
			before := liveHeap()
			scrapeEach(b, st, clients)
			perClient := float64(int64(liveHeap())-int64(before)) / float64(clients)
			b.ReportAllocs()
			scrapeInTurn(b, st, clients)
			b.ReportMetric(perClient, "heap-B/client") // after the loop, which resets what was reported
		})
	}
}

// liveBatch is 100,000 live connections to 500 peers, connection i started
// at start(i).
func liveBatch(start func(i int) uint64) []*tracer.ConnectionStats {
	var conns []*tracer.ConnectionStats
	for i, c := range closedBatch(100_000, 500, 1_000_000) {
		c.Closed = false
		c.StartEpoch = start(i)
		conns = append(conns, &c)
	}
	return conns
}

// benchClient is the id of the benchmarks' client i.
func benchClient(i int) string { return fmt.Sprintf("c%d@10.9.0.%d", i, i) }

// scrapeEach scrapes each of the clients once.
func scrapeEach(b *testing.B, st *State[netip.Addr], clients int) {
	for i := range clients {
		if _, err := st.Scrape(benchClient(i), t0); err != nil {
			b.Fatal(err)
		}
	}
}

// scrapeInTurn scrapes the clients in turn, one per iteration of b.Loop.
func scrapeInTurn(b *testing.B, st *State[netip.Addr], clients int) {
	i := 0
	for b.Loop() {
		if _, err := st.Scrape(benchClient(i%clients), t0); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
