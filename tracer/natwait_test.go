package tracer

import (
	"sync"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// recSink records what the tracer gives its sink.
type recSink struct {
	mu  sync.Mutex
	got []ConnectionStats
}

func (r *recSink) Closed(c []ConnectionStats) {
	r.mu.Lock()
	r.got = append(r.got, c...)
	r.mu.Unlock()
}
func (r *recSink) Clients() int { return 1 }

// A closed connection that had to wait for its NAT (a dump held the lock)
// although its NAT was decided while it was open goes to the sink at the
// next snapshot, however recent the last dump; one still undecided is in
// that snapshot's Leaving if a read reported it live (review of issue 12:
// it was in neither, and the clients' counters went down until the next
// dump).
func TestNATWaitGivenAtNextSnapshot(t *testing.T) {
	cfg := NewDefaultConfig()
	now := time.Now()
	tr := &Tracer{cfg: cfg, ct: &conntracker{
		interval: cfg.ConntrackInterval,
		tables:   map[uint32]map[ctKey]IPTranslation{},
		decided:  map[ConnKey]*IPTranslation{{Cookie: 7}: nil}, // decided while live: not NATed
		missing:  map[uint32]time.Time{},
		dumped:   map[uint32]uint64{},
		last:     now, // a scrape just dumped
	}}
	sink := &recSink{}
	tr.SetSink(sink)
	tr.comms, tr.drainComms = comms{}, comms{}
	raws := []bpf.ConntraceConnRecord{
		{Cookie: 7, Family: afInet, Flags: connEstablished | connClosed, StartNs: ktimeNow(), SentBytes: 1000},
		{Cookie: 8, Family: afInet, Flags: connEstablished | connClosed | connWasLive, StartNs: ktimeNow(), SentBytes: 5},
		{Cookie: 9, Family: afInet, Flags: connEstablished | connClosed, StartNs: ktimeNow(), SentBytes: 6},
	}
	x, y, z := toConnectionStats(&raws[0], tr.comms), toConnectionStats(&raws[1], tr.comms), toConnectionStats(&raws[2], tr.comms)

	tr.ctMu.Lock() // a dump holds it
	out := tr.withNAT([]ConnectionStats{x, y, z}, raws)
	tr.ctMu.Unlock()
	if len(out) != 0 {
		t.Fatalf("given at once: %v", out)
	}
	leaving := tr.translate(nil, now.Add(time.Second))
	if len(sink.got) != 1 || sink.got[0].Key != x.Key {
		t.Errorf("given to the sink: %v, want x (decided while open)", sink.got)
	}
	if len(leaving) != 1 || leaving[0].Key != y.Key {
		t.Errorf("leaving: %v, want y (undecided, reported live before; z never was)", leaving)
	}
	if tr.natWait.len() != 2 {
		t.Errorf("%d waiting, want 2 (y, z)", tr.natWait.len())
	}
}
