package tracer

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// udpSink listens on addr:port in the server namespace and reads every
// datagram with read() (recv without asking who sent it), answering none;
// when reply is set it reads with recvfrom() and answers each with one of
// half its size, to its sender.
func udpSink(t *testing.T, p *nettest.Pair, network, addr string, port uint16, reply bool) {
	t.Helper()
	var pc net.PacketConn
	err := nettest.Do(p.Server, func() (err error) {
		pc, err = net.ListenPacket(network, net.JoinHostPort(addr, strconv.Itoa(int(port))))
		return
	})
	if err != nil {
		t.Fatalf("udp listen %s:%d: %v", addr, port, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			if !reply {
				if _, err := pc.(*net.UDPConn).Read(buf); err != nil {
					return
				}
				continue
			}
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(bytes.Repeat([]byte{'u'}, n/2), from)
		}
	}()
}

// IPv4 datagrams to and from an IPv6 socket bound to :: (dual stack, not
// IPv4-mapped: its local address is ::) are IPv4 flows, traced with
// --no-tracer.collect-ipv6 (issue 11.8: dropped, silently, as IPv6).
func TestUDPDualStackSocketIPv4WithoutIPv6(t *testing.T) {
	eachUDPHook(t, func(c *Config) { c.CollectIPv6Conns = false }, func(t *testing.T, tr *Tracer) {
		p := nettest.NewPair(t)
		retryOnMiss(t, func(t *testing.T, attempt int) *observer {
			port := uint16(7301 + 10*attempt)
			udpSink(t, p, "udp", "::", port, true)
			ends := udpEnds(p, false, port)
			srv := ends["server"]
			srv.src = netip.IPv4Unspecified() // bound to ::, unconnected
			ends["server"] = srv
			o := newObserver(t, tr, t.Name()+strconv.Itoa(attempt), ends)
			o.tolerateMisses = true
			c := dialUDP(t, p, netip.AddrPortFrom(p.Server4, port))
			sent, recv := udpAsk(t, c, 10, 1000, 3000)
			o.waitFor("the server's IPv4 flow", func(tot map[string]*kTotals) bool {
				return tot["server"].recv == sent && tot["server"].sent == recv
			})
			if o.missed {
				checkAtMost(t, o, "server", recv, sent)
				return o
			}
			checkTotals(t, o, "server", recv, sent)
			if f := o.tot["server"].families; !f[AFINET] || len(f) != 1 {
				t.Errorf("server flow families %v, want IPv4 only", f)
			}
			return o
		})
	})
}

// An unconnected socket bound to 0.0.0.0 that reads with recv() does not
// learn its peer: the flow's remote end is unspecified, and it is the
// server side (it bound its port), not local traffic (issue 11.9: remote
// 0.0.0.0 equalled its local 0.0.0.0, so it was "local").
func TestUDPRecvWithoutPeerIsNotLocal(t *testing.T) {
	eachUDPHook(t, nil, func(t *testing.T, tr *Tracer) {
		p := nettest.NewPair(t)
		retryOnMiss(t, func(t *testing.T, attempt int) *observer {
			port := uint16(7401 + 10*attempt)
			udpSink(t, p, "udp4", "0.0.0.0", port, false)
			any4 := netip.IPv4Unspecified()
			o := newObserver(t, tr, t.Name()+strconv.Itoa(attempt), map[string]end{
				"server": {src: any4, dst: any4, port: port, incoming: true, udp: true},
			})
			o.tolerateMisses = true
			c := dialUDP(t, p, netip.AddrPortFrom(p.Server4, port))
			var sent uint64
			for _, n := range []int{10, 1000, 3000} {
				if _, err := c.Write(make([]byte, n)); err != nil {
					t.Fatal(err)
				}
				sent += uint64(n)
			}
			o.waitFor("the server's flow, incoming", func(tot map[string]*kTotals) bool {
				return tot["server"].recv == sent
			})
			if o.missed {
				checkAtMost(t, o, "server", 0, sent)
				return o
			}
			checkTotals(t, o, "server", 0, sent)
			return o
		})
	})
}
