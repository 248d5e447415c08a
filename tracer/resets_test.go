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
	var p portAges
	busy := bpf.ConntraceListenerKey{Netns: 1, Port: 80}
	scanned := bpf.ConntraceListenerKey{Netns: 1, Port: 31337}
	t0 := time.Unix(1000, 0)
	keep, idle := p.age([]portCount{{busy, 1}, {scanned, 1}}, t0)
	if len(keep) != 2 || len(idle) != 0 {
		t.Fatalf("first read: keep %v idle %v", keep, idle)
	}
	keep, idle = p.age([]portCount{{busy, 5}, {scanned, 1}}, t0.Add(PortResetIdle))
	if len(keep) != 2 || len(idle) != 0 {
		t.Fatalf("at the idle time, not past it: keep %v idle %v", keep, idle)
	}
	keep, idle = p.age([]portCount{{busy, 5}, {scanned, 1}}, t0.Add(PortResetIdle+time.Second))
	if len(keep) != 1 || keep[0].Port != 80 || keep[0].Resets != 5 || len(idle) != 1 || idle[0].key != scanned || idle[0].n != 1 {
		t.Fatalf("past the idle time: keep %v idle %v; want port 80 kept (it moved), 31337 idle", keep, idle)
	}
	if _, ok := p.seen[scanned]; ok {
		t.Error("the idle port's age is still kept")
	}
	p.retire(scanned, 1) // its kernel entry deleted
	// The scanned port resets again: its new kernel entry counts from 1,
	// the count retired before is added back (never a counter reset).
	keep, _ = p.age([]portCount{{busy, 5}, {scanned, 1}}, t0.Add(PortResetIdle+2*time.Second))
	found := false
	for _, k := range keep {
		if k.Port == 31337 {
			found = true
			if k.Resets != 2 {
				t.Errorf("the scanned port, back: %d resets, want 2 (1 retired + 1)", k.Resets)
			}
		}
	}
	if !found {
		t.Error("the scanned port, back, is not exported")
	}
	// An entry gone from the kernel loses its age here too: bounded.
	p.age(nil, t0.Add(2*PortResetIdle))
	if len(p.seen) != 0 {
		t.Errorf("%d ports' ages kept after the kernel's table emptied", len(p.seen))
	}
}

// The retired counts are bounded: past maxRetiredPorts the oldest goes.
func TestRetiredPortsBounded(t *testing.T) {
	var p portAges
	p.age(nil, time.Unix(0, 0))
	for i := range maxRetiredPorts + 10 {
		p.retire(bpf.ConntraceListenerKey{Netns: uint32(i / 65536), Port: uint16(i)}, 1)
	}
	if len(p.retired) != maxRetiredPorts || len(p.order) != maxRetiredPorts {
		t.Errorf("%d retired, %d in order; want %d", len(p.retired), len(p.order), maxRetiredPorts)
	}
	if _, ok := p.retired[bpf.ConntraceListenerKey{Port: 0}]; ok {
		t.Error("the oldest retired port is still kept")
	}
}

// A port retired again goes to the back of the order, and a port whose
// entry is back in the kernel is never the one forgotten: its exported
// count would drop (a counter reset).
func TestRetiredPortsOrder(t *testing.T) {
	var p portAges
	p.age(nil, time.Unix(0, 0))
	service := bpf.ConntraceListenerKey{Netns: 9, Port: 8080}
	p.retire(service, 3)
	for i := range maxRetiredPorts - 1 {
		p.retire(bpf.ConntraceListenerKey{Netns: 1, Port: uint16(i)}, 1)
	}
	// The service's entry is back in the kernel (seen), and a scan goes on.
	p.age([]portCount{{service, 1}}, time.Unix(1, 0))
	p.retire(bpf.ConntraceListenerKey{Netns: 2, Port: 1}, 1)
	if p.retired[service] != 3 {
		t.Errorf("the live service port's retired count is %d, want 3 (kept)", p.retired[service])
	}
	if _, ok := p.retired[bpf.ConntraceListenerKey{Netns: 1, Port: 0}]; ok {
		t.Error("the oldest retired port not live is still kept")
	}
	// Retired again: last in order, so the next evictions take others.
	p.retire(bpf.ConntraceListenerKey{Netns: 1, Port: 5}, 1)
	if last := p.order[len(p.order)-1]; last != (bpf.ConntraceListenerKey{Netns: 1, Port: 5}) || len(p.order) != maxRetiredPorts {
		t.Errorf("order ends with %v (%d long), want the port retired again, %d long", last, len(p.order), maxRetiredPorts)
	}
}
