package tracer

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// New failing after the closed-connection reader exists but before the
// drain loop starts (the DNS reader could not be created) calls Close, which
// waited for a loop that never ran: start-up hung (issue 11.2).
func TestCloseBeforeDrainLoopReturns(t *testing.T) {
	nettest.RequireRoot(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		t.Fatal(err)
	}
	tr := &Tracer{closedRd: rd, stop: make(chan struct{})}
	closed := make(chan error, 1)
	go func() { closed <- tr.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s: it waits for a drain loop that never started")
	}
}
