package tracer

import (
	"net"
	"slices"
	"testing"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

func nsInodeOf(t *testing.T, p *nettest.Pair, server bool) uint32 {
	t.Helper()
	path := "/run/netns/" + p.ClientName
	if server {
		path = "/run/netns/" + p.ServerName
	}
	ino, ok := nsInode(path)
	if !ok {
		t.Fatalf("no inode for %s", path)
	}
	return ino
}

// Ports listening before start-up are read from /proc, per namespace, and
// the mapping follows listeners opened and closed afterwards.
func TestPortMappingPerNamespace(t *testing.T) {
	p := nettest.NewPair(t)
	tcpLn := listenPort(t, p, 7600) // before the tracer
	var udp net.PacketConn
	if err := nettest.Do(p.Server, func() (err error) { udp, err = net.ListenPacket("udp4", p.Server4.String()+":7601"); return }); err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tr := newTestTracer(t, nil)
	srv, cli := nsInodeOf(t, p, true), nsInodeOf(t, p, false)
	pm := tr.PortMapping()
	for _, c := range []struct {
		k    PortKey
		want bool
	}{
		{PortKey{srv, 7600, TCP}, true},
		{PortKey{srv, 7601, UDP}, true},
		{PortKey{cli, 7600, TCP}, false}, // the same port in another namespace
		{PortKey{srv, 7600, UDP}, false}, // another protocol
	} {
		if got := pm.IsListening(c.k); got != c.want {
			t.Errorf("IsListening(%+v) = %v, want %v", c.k, got, c.want)
		}
	}
	// A listener opened after start-up, in the client's namespace.
	var late net.Listener
	if err := nettest.Do(p.Client, func() (err error) { late, err = net.Listen("tcp4", p.Client4.String()+":7602"); return }); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.GetActiveConnections("ports"); err != nil {
		t.Fatal(err)
	}
	if !pm.IsListening(PortKey{cli, 7602, TCP}) {
		t.Error("a listener opened after start-up is not in the mapping")
	}
	late.Close()
	tcpLn.Close()
	if _, err := tr.GetActiveConnections("ports"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []PortKey{{cli, 7602, TCP}, {srv, 7600, TCP}} {
		if pm.IsListening(k) {
			t.Errorf("%+v still listening after its listener closed", k)
		}
	}
}

func TestPortMappingAddRemove(t *testing.T) {
	pm := NewPortMapping("/proc")
	k := PortKey{NetNS: 1, Port: 80, Type: TCP}
	pm.AddMapping(k)
	if !pm.IsListening(k) || pm.IsListening(PortKey{NetNS: 2, Port: 80, Type: TCP}) {
		t.Fatal("AddMapping")
	}
	pm.RemoveMapping(k)
	if pm.IsListening(k) || pm.Len() != 0 {
		t.Fatal("RemoveMapping")
	}
}

// Test oracles: only the tests ask the mapping about one port.

// RemoveMapping records that nothing serves on k any more.
func (pm *PortMapping) RemoveMapping(k PortKey) {
	pm.mu.Lock()
	delete(pm.ports, k)
	pm.mu.Unlock()
}

// IsListening says whether something serves on k.
func (pm *PortMapping) IsListening(k PortKey) bool {
	pm.mu.RLock()
	defer pm.mu.RUnlock()
	_, ok := pm.ports[k]
	return ok
}

// Len is the number of ports held.
func (pm *PortMapping) Len() int {
	pm.mu.RLock()
	defer pm.mu.RUnlock()
	return len(pm.ports)
}

func TestPortMappingPortsSorted(t *testing.T) {
	pm := NewPortMapping("/proc")
	for _, k := range []PortKey{{2, 53, UDP}, {2, 22, TCP}, {1, 443, TCP}, {2, 8080, TCP}, {1, 80, TCP}} {
		pm.AddMapping(k)
	}
	want := []PortKey{{1, 80, TCP}, {1, 443, TCP}, {2, 22, TCP}, {2, 8080, TCP}, {2, 53, UDP}}
	if got := pm.Ports(); !slices.Equal(got, want) {
		t.Errorf("Ports() = %v, want %v", got, want)
	}
}
