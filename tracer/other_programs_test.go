package tracer

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// Other tools attach their own programs to inet_sock_set_state, and
// detach them, while connections open: the tracepoint's list of programs
// changes under the exporter's (one to two and back). No connection's
// state change may be missed: both ends of each connection are tracked,
// established, with their bytes. (A hypothesis for the unexplained miss
// noted in issue 14: a connection opened right after start-up was seen
// twice with its SYN_SENT values only, and its server end not at all. It
// does not reproduce this way: 3 runs of 3,000 connections, ~750
// attach/detach cycles each, missed nothing.)
func TestOtherProgramsOnTheTracepointMissNothing(t *testing.T) {
	nettest.RequireRoot(t)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	tr := newTestTracer(t, nil)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "inet_sock_set_state",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, License: "GPL",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	var stop atomic.Bool
	var cycles atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			l, err := link.AttachTracing(link.TracingOptions{Program: prog})
			if err != nil {
				t.Error(err)
				return
			}
			l.Close()
			cycles.Add(1)
		}
	}()
	const n = 1000
	for range n {
		cc, sc := exchange(t, p, ln, 10, 10, true)
		t.Cleanup(func() { cc.Close(); sc.Close() })
	}
	stop.Store(true)
	<-done
	time.Sleep(200 * time.Millisecond)
	snap, err := tr.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	est, clientEnds, serverEnds := 0, 0, 0
	for _, c := range snap.Conns {
		switch {
		case c.Dest == p.Server4 && c.DPort == port:
			clientEnds++
			if c.Established && c.Monotonic.SentBytes == 10 {
				est++
			}
		case c.Source == p.Server4 && c.SPort == port:
			serverEnds++
		}
	}
	snap.Release()
	t.Logf("%d attach/detach cycles of another program while %d connections opened", cycles.Load(), n)
	if cycles.Load() == 0 {
		t.Error("the other program was never attached")
	}
	if est != n || serverEnds != n {
		t.Errorf("missed: %d of %d client ends established with their 10 bytes (%d held), %d server ends; lost %v", est, n, clientEnds, serverEnds, tr.Stats().Lost)
	}
}
