package tracer

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// BenchmarkMemoryWithoutScrapes: a sink that counts for one client (what
// the tracer keeps is then what it keeps for the exporter's state, which
// folds and forgets: netstate), one read, then 40,000 (and 80,000) short
// connections come and go and nobody reads. It reports the heap in
// use (after a GC) before, right after the connections, and once the
// drain's sweep ran, with the entries known holds then: what the drain
// keeps must not grow with connections when nobody scrapes (issue 11.13).
// Run with -benchtime=1x: each iteration is the whole scenario.
//
//	go test -run '^$' -bench MemoryWithoutScrapes -benchtime=1x ./tracer/
func BenchmarkMemoryWithoutScrapes(b *testing.B) {
	for _, n := range []int{40000, 80000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchMemoryWithoutScrapes(b, n) })
	}
}

func benchMemoryWithoutScrapes(b *testing.B, conns int) {
	heap := func() float64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapInuse) / (1 << 20)
	}
	for b.Loop() {
		tr := newTestTracer(b, func(c *Config) {
			c.TCPConnTimeout = 2 * time.Second // closed entries go after 2 s
			c.UDPConnTimeout = 4 * time.Second // the sweep every second
		})
		p := nettest.NewPair(b)
		setClientSysctls(b, p)
		ln, err := p.Listen("tcp4", p.Server4.String()+":0")
		if err != nil {
			b.Fatal(err)
		}
		tr.SetSink(&countingSink{})
		if snap, err := tr.Snapshot(); err != nil {
			b.Fatal(err)
		} else {
			snap.Release()
		}
		go func() { // the server: read 10, answer 10, close
			buf := make([]byte, 10)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.ReadFull(c, buf)
				c.Write(buf)
				c.Close()
			}
		}()
		before := heap()
		buf := make([]byte, 10)
		err = nettest.Do(p.Client, func() error {
			for range conns {
				c, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					return err
				}
				c.Write(buf)
				io.ReadFull(c, buf)
				c.Close()
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		peak := heap()
		time.Sleep(4 * time.Second) // the sweep, twice
		after := heap()
		tr.kmu.Lock()
		known := len(tr.known.m)
		tr.kmu.Unlock()
		b.ReportMetric(before, "heap-MiB-before")
		b.ReportMetric(peak, "heap-MiB-after-conns")
		b.ReportMetric(after, "heap-MiB-after-sweep")
		b.ReportMetric(float64(known), "known-entries-after-sweep")
		ln.Close()
	}
}
