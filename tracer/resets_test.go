package tracer

import (
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// A port scan's ports, or a namespace gone, must not hold the kernel's
// table for good: a port whose count has not moved for PortResetIdle is
// no longer exported and is deleted; one that moves stays.
func TestIdlePortsLeave(t *testing.T) {
	seen := map[bpf.ConntraceListenerKey]portSeen{}
	busy := bpf.ConntraceListenerKey{Netns: 1, Port: 80}
	scanned := bpf.ConntraceListenerKey{Netns: 1, Port: 31337}
	t0 := time.Unix(1000, 0)
	keep, idle := agePorts(seen, []portCount{{busy, 1}, {scanned, 1}}, t0)
	if len(keep) != 2 || len(idle) != 0 {
		t.Fatalf("first read: keep %v idle %v", keep, idle)
	}
	keep, idle = agePorts(seen, []portCount{{busy, 5}, {scanned, 1}}, t0.Add(PortResetIdle))
	if len(keep) != 2 || len(idle) != 0 {
		t.Fatalf("at the idle time, not past it: keep %v idle %v", keep, idle)
	}
	keep, idle = agePorts(seen, []portCount{{busy, 5}, {scanned, 1}}, t0.Add(PortResetIdle+time.Second))
	if len(keep) != 1 || keep[0].Port != 80 || keep[0].Resets != 5 || len(idle) != 1 || idle[0] != scanned {
		t.Fatalf("past the idle time: keep %v idle %v; want port 80 kept (it moved), 31337 idle", keep, idle)
	}
	if _, ok := seen[scanned]; ok {
		t.Error("the idle port is still remembered")
	}
	// An entry gone from the kernel is forgotten here too: bounded.
	agePorts(seen, nil, t0.Add(2*PortResetIdle))
	if len(seen) != 0 {
		t.Errorf("%d ports remembered after the kernel's table emptied", len(seen))
	}
}
