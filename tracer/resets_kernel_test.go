package tracer

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// outRsts is the resets the namespace's TCP sent (/proc/net/snmp's Tcp
// OutRsts): every tcp_v4_send_reset and tcp_send_active_reset.
func outRsts(t *testing.T, p *nettest.Pair, server bool) uint64 {
	t.Helper()
	ns := p.Client
	if server {
		ns = p.Server
	}
	return tcpMIB(t, ns)["OutRsts"]
}

// portResetsOf is the tracer's count of resets without a connection on
// (netns, port), and whether the kernel shows them.
func portResetsOf(t *testing.T, tr *Tracer, netns uint32, port uint16) (uint64, bool) {
	t.Helper()
	rs, ok, err := tr.PortResets()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.NetNS == netns && r.Port == port {
			return r.Resets, ok
		}
	}
	return 0, ok
}

// Resets sent and received, each against what the test made happen and
// against the sending namespace's OutRsts: a close() with unread data
// (the reset comes after the connection's final record: an addendum), a
// close with SO_LINGER 0, and a connect to a port nothing listens on
// (the reset without a connection, per port, on Linux 6.10+).
func TestResets(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) { c.MaxClients = 64 })
	p := nettest.NewPair(t)

	// wantResets checks both ends' resets and the closes: an addendum
	// opens and closes nothing.
	wantResets := func(t *testing.T, o *observer, side string, sent, received uint64) {
		t.Helper()
		tt := o.tot[side]
		if tt.detail.ResetsSent != sent || tt.detail.ResetsReceived != received {
			t.Errorf("%s: resets sent %d received %d, want %d and %d; %s", side, tt.detail.ResetsSent, tt.detail.ResetsReceived, sent, received, o.dump())
		}
		if tt.opened != 1 || tt.closed != 1 {
			t.Errorf("%s: opened %d closed %d, want 1 and 1", side, tt.opened, tt.closed)
		}
	}

	t.Run("close_with_unread_data", func(t *testing.T) {
		ln, port := listen(t, p, false)
		o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
		cc, sc := exchange(t, p, ln, 10, 10, true)
		defer cc.Close()
		// The server has not read the client's 10 bytes... a second
		// write makes sure some are unread whatever exchange read.
		if _, err := cc.Write([]byte("unread")); err != nil {
			t.Fatal(err)
		}
		waitUnread(t, sc)
		before := outRsts(t, p, true)
		sc.Close()
		cc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := cc.Read(make([]byte, 64)); !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("client read after the server's close: %v, want ECONNRESET", err)
		}
		o.waitFor("the server's reset", func(tot map[string]*kTotals) bool {
			return tot["server"].closedSeen >= 1 && tot["server"].detail.ResetsSent >= 1 && tot["client"].closedSeen >= 1
		})
		if d := outRsts(t, p, true) - before; d != 1 {
			t.Errorf("server namespace: OutRsts +%d, want +1", d)
		}
		wantResets(t, o, "server", 1, 0)
		wantResets(t, o, "client", 0, 1)
	})

	t.Run("linger_zero", func(t *testing.T) {
		ln, port := listen(t, p, false)
		o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
		cc, sc := exchange(t, p, ln, 10, 10, true)
		defer sc.Close()
		before := outRsts(t, p, false)
		if err := cc.(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
		cc.Close()
		sc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := sc.Read(make([]byte, 64)); !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("server read after the client's reset: %v, want ECONNRESET", err)
		}
		o.waitFor("the client's reset", func(tot map[string]*kTotals) bool {
			return tot["client"].detail.ResetsSent >= 1 && tot["server"].closedSeen >= 1
		})
		if d := outRsts(t, p, false) - before; d != 1 {
			t.Errorf("client namespace: OutRsts +%d, want +1", d)
		}
		wantResets(t, o, "client", 1, 0)
		wantResets(t, o, "server", 0, 1)
	})

	for _, v6 := range []bool{false, true} {
		name, server, client := "refused_ipv4", p.Server4, p.Client4
		if v6 {
			name, server, client = "refused_ipv6", p.Server6, p.Client6
		}
		t.Run(name, func(t *testing.T) {
			o := newObserver(t, tr, t.Name(), map[string]end{"client": {src: client, dst: server, port: portRefused}})
			serverNS := nsInodeOf(t, p, true)
			portBefore, _ := portResetsOf(t, tr, serverNS, portRefused)
			before := outRsts(t, p, true)
			const connects = 3
			for range connects {
				c, err := dialWith(p, net.JoinHostPort(server.String(), strconv.Itoa(portRefused)), 0, nil)
				if err == nil {
					c.Close()
					t.Fatal("connect to a port nothing listens on succeeded")
				}
				if !errors.Is(err, unix.ECONNREFUSED) {
					t.Fatalf("connect: %v, want ECONNREFUSED", err)
				}
			}
			o.waitFor("the failed connects", func(tot map[string]*kTotals) bool { return tot["client"].closedSeen >= connects })
			if tt := o.tot["client"]; tt.detail.ResetsReceived != connects || tt.detail.ResetsSent != 0 {
				t.Errorf("client: resets received %d sent %d, want %d and 0", tt.detail.ResetsReceived, tt.detail.ResetsSent, connects)
			}
			// OutRsts of /proc/net/snmp counts IPv4 and IPv6 alike.
			sent := outRsts(t, p, true) - before
			if sent != connects {
				t.Errorf("server namespace: OutRsts +%d, want +%d", sent, connects)
			}
			n, ok := portResetsOf(t, tr, serverNS, portRefused)
			if !ok {
				if hasCapability(tr, "tcp_send_reset_no_socket") {
					t.Fatal("the kernel shows resets without a connection, and the tracer reads none")
				}
				t.Logf("resets without a connection not shown by this kernel (before Linux 6.10): %d sent", sent)
				return
			}
			if n-portBefore != sent {
				t.Errorf("resets without a connection on port %d: +%d, the namespace's OutRsts +%d", portRefused, n-portBefore, sent)
			}
		})
	}
}

// waitUnread waits until c's socket has bytes queued that its application
// has not read (FIONREAD).
func waitUnread(t *testing.T, c net.Conn) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		var ierr error
		if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil {
			t.Fatalf("FIONREAD: %v %v", err, ierr)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no unread bytes on the server's socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
