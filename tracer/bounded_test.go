package tracer

import (
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// What the drain keeps between scrapes (the closed connections' entries in
// known, their NAT decisions and waits) is dropped by the drain and the
// sweep themselves once it served its purpose, whether or not anyone
// scrapes (issue 11.13: only a scrape pruned it; RSS grew 44 MiB to 129 MiB
// over 40,000 connections without a scrape). The clients' own state is
// netstate's, bounded the same way (collector's TestClientExpiry).
func TestNothingKeptWithoutScrapes(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) {
		c.TCPConnTimeout = time.Second
		c.UDPConnTimeout = time.Second
	})
	p := nettest.NewPair(t)
	ln, _ := listen(t, p, false)
	if _, err := tr.GetActiveConnections(t.Name()); err != nil { // a client, that never scrapes again
		t.Fatal(err)
	}
	const conns = 500
	for range conns {
		exchange(t, p, ln, 10, 10, false)
	}
	sizes := func() (known, natWait, decided int) {
		tr.kmu.Lock()
		known = len(tr.known.m)
		tr.kmu.Unlock()
		tr.natMu.Lock()
		natWait = tr.natWait.len()
		tr.natMu.Unlock()
		tr.ctMu.Lock()
		if tr.ct != nil {
			decided = len(tr.ct.decided)
		}
		tr.ctMu.Unlock()
		return known, natWait, decided
	}
	if k, _, _ := sizes(); k >= conns {
		t.Errorf("known holds %d entries after %d closed connections: a closed one is kept only while a read is in flight", k, conns)
	}
	peak := 0
	deadline := time.Now().Add(15 * time.Second)
	for {
		k, n, d := sizes()
		peak = max(peak, k)
		if k == 0 && n == 0 && d == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("without scrapes, 15 s after %d connections: known %d entries (peak %d), %d closed waiting for NAT, %d NAT decisions; want all 0",
				conns, k, peak, n, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
