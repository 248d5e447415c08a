package tracer

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/filter"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// listenPort listens for TCP on a fixed port of the server.
func listenPort(t *testing.T, p *nettest.Pair, port uint16) net.Listener {
	t.Helper()
	ln, err := p.Listen("tcp", net.JoinHostPort(p.Server4.String(), strconv.Itoa(int(port))))
	if err != nil {
		t.Fatalf("listen on %d: %v", port, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// udpOnce sends n bytes to the server's port from a connected client socket
// and waits for the echo.
func udpOnce(t *testing.T, p *nettest.Pair, port uint16, n int) {
	t.Helper()
	c := dialUDP(t, p, netip.AddrPortFrom(p.Server4, port))
	c.Write(make([]byte, n))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 65536)); err != nil {
		t.Fatal(err)
	}
}

func filteredEnds(p *nettest.Pair, tcpPorts, udpPorts []uint16) map[string]end {
	ends := map[string]end{}
	for _, port := range tcpPorts {
		e := pairEnds(p, false, port)
		ends[fmt.Sprintf("tcp/%d/client", port)] = e["client"]
		ends[fmt.Sprintf("tcp/%d/server", port)] = e["server"]
	}
	for _, port := range udpPorts {
		e := udpEnds(p, false, port)
		ends[fmt.Sprintf("udp/%d/client", port)] = e["client"]
		ends[fmt.Sprintf("udp/%d/server", port)] = e["server"]
	}
	return ends
}

// Exclusions, in the kernel: each socket is matched on its own local side
// (source filters) and remote side (destination filters), as in the seed.
func TestExcludedConnectionsNeverAppear(t *testing.T) {
	filters, err := filter.NewConnectionFilters(
		map[string][]string{"198.18.0.2": {"tcp 7500"}},                                    // source: the server's local side
		map[string][]string{"198.18.0.2/32": {"tcp 7200-7210", "udp 7300"}, "*": {"7999"}}, // destination
		nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTestTracer(t, func(c *Config) { c.Filters = filters })
	if tr.userFilter {
		t.Fatal("filters fell back to user space; this test is about the kernel")
	}
	p := nettest.NewPair(t)
	tcpPorts := []uint16{7200, 7210, 7211, 7300, 7500, 7999}
	udpPorts := []uint16{7300, 7301}
	o := newObserver(t, tr, t.Name(), filteredEnds(p, tcpPorts, udpPorts))
	for _, port := range tcpPorts {
		exchange(t, p, listenPort(t, p, port), 1000+int(port), 10, false)
	}
	for _, port := range udpPorts {
		udpServer(t, p, p.Server4, port, func(n int) int { return n })
		udpOnce(t, p, port, int(port))
	}
	traced := map[string][2]uint64{ // end → sent, received
		"tcp/7200/server": {10, 8200}, "tcp/7210/server": {10, 8210},
		"tcp/7211/client": {8211, 10}, "tcp/7211/server": {10, 8211},
		"tcp/7300/client": {8300, 10}, "tcp/7300/server": {10, 8300}, // "udp 7300" spares TCP
		"tcp/7500/client": {8500, 10}, // the source filter excludes only the server's end
		"tcp/7999/server": {10, 8999},
		"udp/7300/server": {7300, 7300},
		"udp/7301/client": {7301, 7301}, "udp/7301/server": {7301, 7301},
	}
	o.waitFor("the traced ends", func(tot map[string]*kTotals) bool {
		for name, w := range traced {
			if tot[name].sent != w[0] || tot[name].recv != w[1] {
				return false
			}
		}
		return true
	})
	time.Sleep(100 * time.Millisecond)
	o.poll()
	for name, tt := range o.tot {
		if w, ok := traced[name]; ok {
			checkTotals(t, o, name, w[0], w[1])
		} else if len(tt.conns) != 0 || tt.sent+tt.recv != 0 {
			t.Errorf("%s is excluded but appeared: %d connections, %d bytes", name, len(tt.conns), tt.sent+tt.recv)
		}
	}
}

// Inclusions: only what an include filter names is traced.
func TestIncludedConnectionsOnly(t *testing.T) {
	filters, err := filter.NewConnectionFilters(nil, nil, nil, map[string][]string{"198.18.0.0/24": {"tcp 7700", "udp 7800"}})
	if err != nil {
		t.Fatal(err)
	}
	tr := newTestTracer(t, func(c *Config) { c.Filters = filters })
	p := nettest.NewPair(t)
	o := newObserver(t, tr, t.Name(), filteredEnds(p, []uint16{7700, 7701}, []uint16{7800, 7801}))
	exchange(t, p, listenPort(t, p, 7700), 777, 7, false)
	exchange(t, p, listenPort(t, p, 7701), 777, 7, false)
	for _, port := range []uint16{7800, 7801} {
		udpServer(t, p, p.Server4, port, func(n int) int { return n })
		udpOnce(t, p, port, 88)
	}
	o.waitFor("the included ends", func(tot map[string]*kTotals) bool {
		return tot["tcp/7700/client"].closedSeen == 1 && tot["udp/7800/client"].sent == 88
	})
	time.Sleep(100 * time.Millisecond)
	o.poll()
	checkTotals(t, o, "tcp/7700/client", 777, 7)
	checkTotals(t, o, "udp/7800/client", 88, 88)
	for name, tt := range o.tot {
		if name != "tcp/7700/client" && name != "udp/7800/client" && (len(tt.conns) != 0 || tt.sent+tt.recv != 0) {
			t.Errorf("%s is not included but appeared: %d connections, %d bytes", name, len(tt.conns), tt.sent+tt.recv)
		}
	}
}
