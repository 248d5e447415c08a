package tracer

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// connsTo returns the connections of the kernel's view that match f.
func connsTo(t *testing.T, tr *Tracer, f func(*ConnectionStats) bool) []ConnectionStats {
	t.Helper()
	got, err := tr.DebugNetworkMaps()
	if err != nil {
		t.Fatal(err)
	}
	var out []ConnectionStats
	for _, c := range got.Conns {
		if f(&c) {
			out = append(out, c)
		}
	}
	return out
}

// Loopback traffic is local; the service port is still the listener's.
func TestLoopbackIsLocal(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	var ln net.Listener
	var cc net.Conn
	if err := nettest.Do(p.Client, func() (err error) {
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		cc, err = net.Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	defer cc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cc.Write(make([]byte, 4321))
	io.ReadFull(sc, make([]byte, 4321))
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	lo := netip.MustParseAddr("127.0.0.1")
	conns := connsTo(t, tr, func(c *ConnectionStats) bool {
		return c.Source == lo && c.Dest == lo && (c.SPort == port || c.DPort == port)
	})
	if len(conns) != 2 {
		t.Fatalf("%d loopback connection ends, want 2: %v", len(conns), conns)
	}
	for _, c := range conns {
		server := c.SPort == port
		if c.Direction != LOCAL || c.ServerSide != server || c.ServicePort() != port || !c.IntraHost {
			t.Errorf("%s: direction %s, server side %v, service port %d, intra-host %v; want local, %v, %d, true",
				c, c.Direction, c.ServerSide, c.ServicePort(), c.IntraHost, server, port)
		}
		if want := uint64(4321); (server && c.Monotonic.RecvBytes != want) || (!server && c.Monotonic.SentBytes != want) {
			t.Errorf("%s: bytes not exact", c)
		}
	}
}

// The seed keyed listening ports by port alone: a client whose local port
// equals a port something listens on in another namespace was read as
// incoming. Here the direction comes from who connected, per socket.
func TestEphemeralPortEqualToListeningPortElsewhere(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	service := listenPort(t, p, 7900)
	other := listenPort(t, p, 7901) // listens in the server's netns...
	defer other.Close()
	var cc net.Conn
	if err := nettest.Do(p.Client, func() (err error) {
		// ...and the client connects from that very port number.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: p.Client4.AsSlice(), Port: 7901}}
		cc, err = d.Dial("tcp4", net.JoinHostPort(p.Server4.String(), "7900"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := service.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		conns := connsTo(t, tr, func(c *ConnectionStats) bool {
			return c.Type == TCP && ((c.SPort == 7901 && c.DPort == 7900) || (c.SPort == 7900 && c.DPort == 7901))
		})
		if len(conns) == 2 {
			for _, c := range conns {
				want, port := OUTGOING, uint16(7900)
				if c.SPort == 7900 {
					want = INCOMING
				}
				if c.Direction != want || c.ServicePort() != port || !c.IntraHost {
					t.Errorf("%s: direction %s service port %d intra-host %v, want %s %d true", c, c.Direction, c.ServicePort(), c.IntraHost, want, port)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("found %d ends of the connection, want 2", len(conns))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// UDP: a socket bound to its port serves (incoming), its client does not
// (none), and a UDP exchange on loopback is local.
func TestUDPDirection(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	udpServer(t, p, p.Server4, 7950, func(n int) int { return n })
	udpOnce(t, p, 7950, 10)
	var srv, cl net.PacketConn
	if err := nettest.Do(p.Client, func() (err error) {
		if srv, err = net.ListenPacket("udp4", "127.0.0.1:7951"); err != nil {
			return err
		}
		cl, err = net.ListenPacket("udp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	defer cl.Close()
	cl.WriteTo(make([]byte, 5), srv.LocalAddr())
	srv.ReadFrom(make([]byte, 10))
	want := map[string]ConnectionDirection{
		"198.18.0.1→7950": NONE, "198.18.0.2←7950": INCOMING,
		"127.0.0.1→7951": LOCAL, "127.0.0.1←7951": LOCAL,
	}
	got := map[string]ConnectionDirection{}
	for _, c := range connsTo(t, tr, func(c *ConnectionStats) bool { return c.Type == UDP }) {
		switch {
		case c.DPort == 7950 || c.DPort == 7951:
			got[c.Source.String()+"→"+strconv.Itoa(int(c.DPort))] = c.Direction
		case c.SPort == 7950 || c.SPort == 7951:
			got[c.Source.String()+"←"+strconv.Itoa(int(c.SPort))] = c.Direction
		}
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: direction %s, want %s (all: %v)", k, got[k], w, got)
		}
	}
}
