package tracer

import (
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// What the drain keeps between scrapes (the closed connections' entries in
// known, their NAT decisions and waits, the clients' closed buffers) is
// dropped by the drain itself once it served its purpose, whether or not
// anyone scrapes (issue 11.13: only a scrape pruned it; RSS grew 44 MiB to
// 129 MiB over 40,000 connections without a scrape).
func TestNothingKeptWithoutScrapes(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) {
		c.TCPConnTimeout = time.Second
		c.UDPConnTimeout = time.Second
		c.ClientStateExpiry = time.Second
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
	sizes := func() (known, natWait, decided, clients int) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		known, natWait = len(tr.known.m), len(tr.natWait)
		if tr.ct != nil {
			decided = len(tr.ct.decided)
		}
		return known, natWait, decided, tr.state.Clients()
	}
	peak := 0
	deadline := time.Now().Add(15 * time.Second)
	for {
		k, n, d, c := sizes()
		peak = max(peak, k)
		if peak >= 2*conns && k == 0 && n == 0 && d == 0 && c == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("without scrapes, 15 s after %d connections: known %d entries (peak %d), %d closed waiting for NAT, %d NAT decisions, %d clients; want the peak at %d, then all 0",
				conns, k, peak, n, d, c, 2*conns)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
