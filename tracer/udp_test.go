package tracer

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/bpf"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// eachUDPHook runs body once for each UDP hook this kernel offers (the
// length tracepoints, the fexit and kprobe fallbacks), with a tracer forced
// to it: each is proven exact where it runs.
func eachUDPHook(t *testing.T, mod func(*Config), body func(t *testing.T, tr *Tracer)) {
	t.Helper()
	nettest.RequireRoot(t)
	// With TCP (the default) where the kernel can trace it, UDP only where
	// it cannot.
	tcp := TCPPossible() == nil
	hooks := 0
	for _, hook := range udpHooks {
		if err := UDPHookPossible(hook); err != nil {
			t.Logf("UDP hook %s: not on this kernel (%v)", hook, err)
			continue
		}
		hooks++
		t.Run(hook, func(t *testing.T) {
			body(t, newTestTracer(t, func(c *Config) {
				c.UDPHook = hook
				c.CollectTCPConns = tcp
				if mod != nil {
					mod(c)
				}
			}))
		})
	}
	if hooks == 0 {
		t.Fatal("this kernel offers no UDP hook")
	}
}

// udpServer listens on a fixed port (an explicit bind: the server side is
// "incoming") in the server namespace and answers each datagram of n bytes
// with one of reply(n) bytes, to its sender.
func udpServer(t *testing.T, p *nettest.Pair, addr netip.Addr, port uint16, reply func(int) int) {
	t.Helper()
	var pc net.PacketConn
	err := nettest.Do(p.Server, func() (err error) {
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(addr, port).String())
		return
	})
	if err != nil {
		t.Fatalf("udp listen %s:%d: %v", addr, port, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if m := reply(n); m > 0 {
				pc.WriteTo(bytes.Repeat([]byte{'u'}, m), from)
			}
		}
	}()
}

// dialUDP opens a connected UDP socket from the client namespace.
func dialUDP(t *testing.T, p *nettest.Pair, to netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	if err := nettest.Do(p.Client, func() (err error) {
		c, err = net.Dial("udp", to.String())
		return
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpAsk sends a datagram of each size on the connected socket c and reads
// each answer; it returns the bytes sent and received.
func udpAsk(t *testing.T, c net.Conn, sizes ...int) (sent, recv uint64) {
	t.Helper()
	buf := make([]byte, 65536)
	for _, n := range sizes {
		if _, err := c.Write(bytes.Repeat([]byte{'c'}, n)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, err := c.Read(buf)
		if err != nil {
			t.Fatalf("reading the answer to %d bytes: %v", n, err)
		}
		sent += uint64(n)
		recv += uint64(m)
	}
	return sent, recv
}

func udpEnds(p *nettest.Pair, v6 bool, port uint16) map[string]end {
	e := pairEnds(p, v6, port)
	c, s := e["client"], e["server"]
	c.udp, s.udp = true, true
	return map[string]end{"client": c, "server": s}
}

// Connected UDP: a client socket connect()ed to the server, which answers
// with sendto(): bytes exact on both ends, v4 and v6.
func TestUDPConnectedExactBytes(t *testing.T) {
	eachUDPHook(t, nil, func(t *testing.T, tr *Tracer) {
		p := nettest.NewPair(t)
		for _, v6 := range []bool{false, true} {
			t.Run(familyName(v6), func(t *testing.T) {
				retryOnMiss(t, func(t *testing.T, attempt int) *observer {
					port := uint16(7001 + 10*attempt)
					srv := p.Server4
					if v6 {
						srv = p.Server6
					}
					udpServer(t, p, srv, port, func(n int) int { return n/2 + 1 })
					o := attemptObserver(t, tr, attempt, udpEnds(p, v6, port))
					c := dialUDP(t, p, netip.AddrPortFrom(srv, port))
					sent, recv := udpAsk(t, c, 1, 100, 1000, 1400, 8000, 30000)
					o.waitFor("UDP bytes", func(tot map[string]*kTotals) bool {
						return tot["client"].sent == sent && tot["client"].recv == recv &&
							tot["server"].sent == recv && tot["server"].recv == sent
					})
					time.Sleep(50 * time.Millisecond)
					o.poll()
					if o.missed {
						checkAtMost(t, o, "client", sent, recv)
						checkAtMost(t, o, "server", recv, sent)
						return o
					}
					checkTotals(t, o, "client", sent, recv)
					checkTotals(t, o, "server", recv, sent)
					if tt := o.tot["client"]; tt.opened != 1 {
						t.Errorf("client flow opened %d times, want 1", tt.opened)
					}
					return o
				})
			})
		}
	})
}

// checkAtMost: after a skipped program run, what was counted is at most
// the truth: a miss loses a call's bytes, never adds any.
func checkAtMost(t *testing.T, o *observer, name string, sent, recv uint64) {
	t.Helper()
	if tt := o.tot[name]; tt.sent > sent || tt.recv > recv {
		t.Errorf("%s: sent %d recv %d, more than the %d and %d the test moved", name, tt.sent, tt.recv, sent, recv)
	}
}

// Unconnected UDP: one socket sendto()s many peers and recvfrom()s their
// answers: bytes exact per peer.
func TestUDPManyPeersFromOneSocket(t *testing.T) {
	eachUDPHook(t, nil, func(t *testing.T, tr *Tracer) {
		p := nettest.NewPair(t)
		retryOnMiss(t, func(t *testing.T, attempt int) *observer {
			const peers = 20
			base := 7100 + 50*attempt
			ends := map[string]end{}
			for i := 0; i < peers; i++ {
				port := uint16(base + i)
				udpServer(t, p, p.Server4, port, func(n int) int { return n + 3 })
				e := udpEnds(p, false, port)
				ends[fmt.Sprintf("client-%d", i)] = e["client"]
				ends[fmt.Sprintf("server-%d", i)] = e["server"]
			}
			o := attemptObserver(t, tr, attempt, ends)
			var pc net.PacketConn
			if err := nettest.Do(p.Client, func() (err error) {
				pc, err = net.ListenPacket("udp4", net.JoinHostPort(p.Client4.String(), "0"))
				return
			}); err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			buf := make([]byte, 65536)
			want := map[string][2]uint64{}
			for i := 0; i < peers; i++ {
				to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Server4, uint16(base+i)))
				for k := 0; k <= i%3; k++ {
					n := 10*i + k + 1
					if _, err := pc.WriteTo(make([]byte, n), to); err != nil {
						t.Fatal(err)
					}
					pc.SetReadDeadline(time.Now().Add(2 * time.Second))
					m, from, err := pc.ReadFrom(buf)
					if err != nil || from.String() != to.String() {
						t.Fatalf("answer from %v (%v), want %v", from, err, to)
					}
					w := want[fmt.Sprintf("client-%d", i)]
					w[0] += uint64(n)
					w[1] += uint64(m)
					want[fmt.Sprintf("client-%d", i)] = w
					want[fmt.Sprintf("server-%d", i)] = [2]uint64{w[1], w[0]}
				}
			}
			o.waitFor("every peer's bytes", func(tot map[string]*kTotals) bool {
				for name, w := range want {
					if tot[name].sent != w[0] || tot[name].recv != w[1] {
						return false
					}
				}
				return true
			})
			for name, w := range want {
				if o.missed {
					checkAtMost(t, o, name, w[0], w[1])
				} else {
					checkTotals(t, o, name, w[0], w[1])
				}
			}
			return o
		})
	})
}

// A peer left for a thread by a call the programs missed (a recursion miss:
// on a preemptible kernel another thread ran the program on that CPU) is
// not charged to the thread's next call on another socket: the bytes of a
// connected send go to that socket's own peer. The test leaves such an
// entry itself, for its own thread, then sends on that thread.
func TestUDPStalePeerNotTaken(t *testing.T) {
	eachUDPHook(t, nil, func(t *testing.T, tr *Tracer) {
		p := nettest.NewPair(t)
		const port, n = 7003, 123
		stale := netip.MustParseAddr("192.0.2.9")
		udpServer(t, p, p.Server4, port, func(int) int { return 0 })
		ends := udpEnds(p, false, port)
		ends["stale"] = end{src: p.Client4, dst: stale, port: 9, udp: true}
		o := newObserver(t, tr, t.Name(), ends)
		err := nettest.Do(p.Client, func() error { // one locked thread
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: p.Server4.As4()}); err != nil {
				return err
			}
			left := bpf.ConntraceUdpPeer{Cookie: 1, Port: 9, Family: unix.AF_INET}
			copy(left.Addr[:], stale.AsSlice())
			thread := uint64(os.Getpid())<<32 | uint64(unix.Gettid())
			if err := tr.objs.UdpSendPeer.Put(thread, &left); err != nil {
				return fmt.Errorf("leaving a peer for thread %d: %w", unix.Gettid(), err)
			}
			_, err = unix.Write(fd, make([]byte, n))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		o.waitFor("the connected send", func(tot map[string]*kTotals) bool {
			return tot["client"].sent == n && tot["server"].recv == n
		})
		o.poll()
		if tt := o.tot["stale"]; tt.sent != 0 || tt.opened != 0 {
			t.Errorf("the left peer %s:9 was charged: sent=%d opened=%d", stale, tt.sent, tt.opened)
		}
	})
}

// A flow idle for UDPConnTimeout is closed, and counted closed once.
func TestUDPIdleFlowClosedOnce(t *testing.T) {
	eachUDPHook(t, func(c *Config) { c.UDPConnTimeout = time.Second }, func(t *testing.T, tr *Tracer) {
		p := nettest.NewPair(t)
		const port = 7002
		udpServer(t, p, p.Server4, port, func(n int) int { return n })
		o := newObserver(t, tr, t.Name(), udpEnds(p, false, port))
		c := dialUDP(t, p, netip.AddrPortFrom(p.Server4, port))
		c.Write(make([]byte, 321))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		o.waitFor("the flows", func(tot map[string]*kTotals) bool { return tot["client"].sent == 321 && tot["server"].recv == 321 })
		o.waitFor("the idle flows closed", func(tot map[string]*kTotals) bool {
			return tot["client"].closed == 1 && tot["server"].closed == 1
		})
		time.Sleep(1500 * time.Millisecond)
		o.poll()
		o.poll()
		for _, side := range []string{"client", "server"} {
			tt := o.tot[side]
			if tt.opened != 1 || tt.closed != 1 || tt.sent+tt.recv != 321*2 {
				t.Errorf("%s: opened=%d closed=%d bytes=%d, want 1 1 642", side, tt.opened, tt.closed, tt.sent+tt.recv)
			}
		}
		// New traffic after the close is a new flow.
		c.Write(make([]byte, 5))
		o.waitFor("a second flow", func(tot map[string]*kTotals) bool { return tot["client"].opened == 2 && tot["client"].sent == 326 })
	})
}

// Reading a UDP socket's error queue (IP_RECVERR) returns the quote of an
// ICMP error, which the peer never sent: not counted as received.
func TestUDPErrorQueueNotCounted(t *testing.T) {
	eachUDPHook(t, nil, func(t *testing.T, tr *Tracer) {
		p := nettest.NewPair(t)
		const port = 7009 // nothing listens: the server namespace answers port unreachable
		o := newObserver(t, tr, t.Name(), udpEnds(p, false, port))
		var fd int
		if err := nettest.Do(p.Client, func() (err error) {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			return
		}); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: p.Server4.As4()}); err != nil {
			t.Fatal(err)
		}
		const n = 100
		if _, err := unix.Write(fd, bytes.Repeat([]byte{'e'}, n)); err != nil {
			t.Fatal(err)
		}
		buf, oob := make([]byte, 1500), make([]byte, 512)
		var quoted int
		deadline := time.Now().Add(3 * time.Second)
		for {
			m, _, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err == nil {
				quoted = m
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ICMP error queued for a datagram to a closed port: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if quoted != n {
			t.Fatalf("the error queue returned %d bytes, want the %d quoted", quoted, n)
		}
		o.waitFor("the datagram sent", func(tot map[string]*kTotals) bool { return tot["client"].sent == n })
		time.Sleep(50 * time.Millisecond)
		o.poll()
		checkTotals(t, o, "client", n, 0)
	})
}
