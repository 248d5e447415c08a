package tracer

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

func newTestTracer(t testing.TB, mod func(*Config)) *Tracer {
	t.Helper()
	nettest.RequireRoot(t)
	cfg := NewDefaultConfig()
	cfg.BPFDebug = true
	// Closed connections wait for a conntrack dump (at most one per
	// interval, 5 s by default) before they are counted: tests that wait
	// for a close wait less.
	cfg.ConntrackInterval = 100 * time.Millisecond
	if mod != nil {
		mod(cfg)
	}
	wantTCP := cfg.CollectTCPConns
	tr, err := New(cfg, log.NewLogfmtLogger(os.Stderr))
	if err != nil {
		t.Fatalf("starting the tracer: %v", err)
	}
	if wantTCP && !tr.cfg.CollectTCPConns {
		// Said at start-up, and in the kernel matrix's table: a kernel
		// too old for TCP (before 5.12), or whose verifier refuses the
		// TCP iterator. Never when it has all TCP needs.
		tr.Close()
		it, missing, _ := chooseTCPIterator(cfg.TCPIterator, tr.support)
		if it != "" {
			t.Fatal("TCP switched off on a kernel that has all it needs")
		}
		t.Skipf("this kernel cannot trace TCP: it lacks %s", strings.Join(missing, "; "))
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("closing the tracer: %v", err)
		}
	})
	return tr
}

func TestLoadAttachAndClose(t *testing.T) {
	tr := newTestTracer(t, nil)
	want := map[string]string{
		"handle_set_state": "tp_btf", "handle_destroy_sock": "tp_btf", "handle_sockops": "sockops",
	}
	// The iterators of this kernel's way (task_file, or iter/tcp where
	// the verifier refuses the task_file one), and none of the other's
	// but seed_conns_tcp for the sockets no file points to and
	// seed_listeners for the cookies of UDP sockets.
	switch tr.tcpIter {
	case TCPIteratorTaskFile:
		want["seed_listeners"], want["seed_conns"], want["dump_conns"] = "iter", "iter", "iter"
		want["seed_owners"], want["dump_conns_tcp"], want["seed_conns_tcp"] = "", "", ""
		if tr.seedsUnheld() {
			want["seed_conns_tcp"] = "iter"
		}
	case TCPIteratorTCP:
		want["seed_owners"], want["seed_conns_tcp"], want["dump_conns_tcp"] = "iter", "iter", "iter"
		want["seed_conns"], want["dump_conns"], want["seed_listeners"] = "", "", ""
		if tr.seedsUDPCookies() {
			want["seed_listeners"] = "iter"
		}
	default:
		t.Fatalf("TCP iterator %q", tr.tcpIter)
	}
	t.Logf("TCP iterator: %s", tr.tcpIter)
	got := map[string]string{}
	for _, a := range tr.Attachments() {
		got[a.Program] = a.Attach
	}
	for p, mode := range want {
		if got[p] != mode {
			t.Errorf("program %s attached as %q, want %q (all: %v)", p, got[p], mode, tr.Attachments())
		}
	}
	if _, err := tr.GetActiveConnections("load-test"); err != nil {
		t.Fatalf("first read: %v", err)
	}
}

// With TCP switched off (--no-tracer.collect-tcp, or a kernel that cannot
// trace it), no TCP program is loaded or attached, UDP still is, and reads
// work. (Before, the flag had no effect: every TCP program was loaded.)
func TestTCPOffLoadsNoTCPProgram(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) { c.CollectTCPConns = false })
	progs := tr.programs()
	keep := tr.seedsUDPCookies()
	tcp := slices.DeleteFunc(programsWhere(func(p *program) bool { return p.feature == featureTCP }), func(n string) bool { return keep && n == "seed_listeners" })
	for _, name := range tcp {
		if progs[name] != nil {
			t.Errorf("%s loaded with TCP off", name)
		}
	}
	udp := false
	for _, a := range tr.Attachments() {
		if slices.Contains(tcp, a.Program) {
			t.Errorf("%s attached with TCP off", a.Program)
		}
		udp = udp || strings.HasPrefix(a.Program, "udp_")
	}
	if !udp {
		t.Errorf("no UDP program attached: %v", tr.Attachments())
	}
	if keep && progs["seed_listeners"] == nil {
		t.Error("seed_listeners not loaded: the UDP kprobes miss the cookies of existing sockets")
	}
	if _, err := tr.GetActiveConnections("tcp-off"); err != nil {
		t.Fatalf("reading with TCP off: %v", err)
	}
}

// A snapshot's connections are the tracer's own entries: a read (a
// scrape's, or the debug page's) waits for the previous snapshot's
// release, and goes on after it.
func TestReadWaitsForTheSnapshotsRelease(t *testing.T) {
	tr := newTestTracer(t, nil)
	first, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release() // if the test fails before it does
	done := make(chan error, 2)
	go func() {
		s, err := tr.Snapshot()
		if err == nil {
			s.Release()
		}
		done <- err
	}()
	go func() {
		_, err := tr.DebugNetworkMaps()
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a read went on while a snapshot was in use (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	copied := *first
	first.Release()
	copied.Release() // a second release, even of a copy, does nothing
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a read still waits after the release")
		}
	}
	// Released, nothing of a read stays reachable from the arrays it
	// reuses: without another read, the entries closed since must go.
	tr.snapMu.Lock()
	defer tr.snapMu.Unlock()
	for i, p := range tr.snapConns[:cap(tr.snapConns)] {
		if p != nil {
			t.Fatalf("entry %d of the read's array still points at %s after its release", i, p.Key)
		}
	}
	if len(tr.udp.live) != 0 {
		t.Errorf("%d UDP flows held after the release", len(tr.udp.live))
	}
}
