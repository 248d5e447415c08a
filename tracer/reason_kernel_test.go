package tracer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// Ports of the server namespace that the reason tests' nftables rules
// drop or reject (see TestFailureReasons).
const (
	portRefused     = 7001 // nothing listens: the kernel answers with a reset
	portDropped     = 7002 // SYNs dropped: the connect times out
	portHostUnreach = 7003 // ICMP host unreachable
	portNetUnreach  = 7004 // ICMP net unreachable
)

// dialWith connects from the client namespace with control applied to the
// socket before connect (nil: none) and timeout (0: none).
func dialWith(p *nettest.Pair, addr string, timeout time.Duration, control func(fd int) error) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if control != nil {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = control(int(fd)) }); err != nil {
				return err
			}
			return serr
		}
	}
	var c net.Conn
	err := nettest.Do(p.Client, func() (err error) { c, err = d.Dial("tcp", addr); return })
	return c, err
}

// wantReasons waits for n close records of the end and checks its
// failures and aborts by reason.
func wantReasons(t *testing.T, o *observer, side string, n int, failures, aborts map[Reason]uint64) {
	t.Helper()
	o.waitFor(side+" close records", func(tot map[string]*kTotals) bool { return tot[side].closedSeen >= n })
	var wantF, wantA [NumReasons]uint64
	for r, v := range failures {
		wantF[r] = v
	}
	for r, v := range aborts {
		wantA[r] = v
	}
	tt := o.tot[side]
	if tt.failures != wantF || tt.aborts != wantA {
		t.Errorf("%s: failures %v aborts %v, want %v and %v (indexed by Reason: %v); %s", side, tt.failures, tt.aborts, wantF, wantA, reasonNames, o.dump())
	}
}

// errnoDelta returns how many more closes with errno the tracer counted
// than before.
func errnoDelta(tr *Tracer, before map[uint16]uint64, errno unix.Errno) uint64 {
	return tr.Stats().CloseErrors[uint16(errno)] - before[uint16(errno)]
}

// Each failure reason happens for real between two namespaces: the reason
// the tracer gives must be the error connect() returned to the test, and
// conntrace_connection_errors_total counts that error once.
func TestFailureReasons(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) { c.MaxClients = 64 })
	p := nettest.NewPair(t)
	// The ICMP errors answer the SYN's retransmission, not the SYN: an
	// error that comes back while connect() itself still holds the socket
	// (here, on veth, it would: one softirq carries SYN, reject and ICMP)
	// is only a soft error, which the application takes and then closes
	// the socket (see README, Limits). The quota lets the first SYN (60
	// bytes) through to the drop.
	p.ServerNft(t, fmt.Sprintf(`table ip conntrace_reasons {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport %d drop
		tcp dport %d quota over 80 bytes reject with icmp type host-unreachable
		tcp dport %d drop
		tcp dport %d quota over 80 bytes reject with icmp type net-unreachable
		tcp dport %d drop
	}
}`, portDropped, portHostUnreach, portHostUnreach, portNetUnreach, portNetUnreach))
	server := func(port int) string { return net.JoinHostPort(p.Server4.String(), strconv.Itoa(port)) }
	synCount1 := func(fd int) error { return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1) }

	for _, c := range []struct {
		name    string
		port    int
		timeout time.Duration
		control func(int) error
		errno   unix.Errno // what connect() returns; 0 for a dial's own time-out
		want    Reason
	}{
		{"refused", portRefused, 0, nil, unix.ECONNREFUSED, ReasonRefused},
		// One SYN retransmission: the connect times out after 1 + 2 s.
		{"timeout", portDropped, 0, synCount1, unix.ETIMEDOUT, ReasonTimeout},
		{"host_unreachable", portHostUnreach, 0, nil, unix.EHOSTUNREACH, ReasonHostUnreachable},
		{"net_unreachable", portNetUnreach, 0, nil, unix.ENETUNREACH, ReasonNetUnreachable},
		// The dial gives up first and closes the connecting socket.
		{"cancelled", portDropped, 300 * time.Millisecond, nil, 0, ReasonCancelled},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := newObserver(t, tr, t.Name(), map[string]end{"client": {src: p.Client4, dst: p.Server4, port: uint16(c.port)}})
			before := tr.Stats().CloseErrors
			conn, err := dialWith(p, server(c.port), c.timeout, c.control)
			if err == nil {
				conn.Close()
				t.Fatalf("connect to port %d succeeded", c.port)
			}
			if c.errno != 0 && !errors.Is(err, c.errno) {
				t.Fatalf("connect to port %d: %v, want %v", c.port, err, c.errno)
			}
			var ne net.Error
			if c.errno == 0 && !(errors.As(err, &ne) && ne.Timeout()) {
				t.Fatalf("connect to port %d: %v, want the dial's time-out", c.port, err)
			}
			wantReasons(t, o, "client", 1, map[Reason]uint64{c.want: 1}, nil)
			if tt := o.tot["client"]; tt.opened != 0 || tt.closed != 0 || tt.failed != 1 {
				t.Errorf("opened=%d closed=%d failed=%d, want 0 0 1", tt.opened, tt.closed, tt.failed)
			}
			if c.errno != 0 {
				if d := errnoDelta(tr, before, c.errno); d != 1 {
					t.Errorf("connection errors %s: +%d, want +1", ErrnoName(uint16(c.errno)), d)
				}
			}
		})
	}

	// No free local port: the client namespace has one, held by a
	// connection to the same server address and port.
	t.Run("no_local_port", func(t *testing.T) {
		p := nettest.NewPair(t)
		if err := nettest.Do(p.Client, func() error {
			return os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40000"), 0)
		}); err != nil {
			t.Fatal(err)
		}
		ln, port := listen(t, p, false)
		o := newObserver(t, tr, t.Name(), map[string]end{"client": {src: p.Client4, dst: p.Server4, port: port}})
		held, err := p.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("first connect: %v", err)
		}
		defer held.Close()
		// One connect() (Go's dialer tries again after EADDRNOTAVAIL).
		err = nettest.Do(p.Client, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: p.Server4.As4()})
		})
		if !errors.Is(err, unix.EADDRNOTAVAIL) {
			t.Fatalf("second connect: %v, want EADDRNOTAVAIL", err)
		}
		wantReasons(t, o, "client", 1, map[Reason]uint64{ReasonNoLocalPort: 1}, nil)
	})
}

// Established connections that end badly: a reset from the peer (SO_LINGER
// 0), and a peer that stops answering (TCP_USER_TIMEOUT). The side that
// sent the reset closed well: no abort there.
func TestAbortReasons(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) { c.MaxClients = 64 })
	p := nettest.NewPair(t)

	t.Run("reset", func(t *testing.T) {
		ln, port := listen(t, p, false)
		o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
		before := tr.Stats().CloseErrors
		cc, sc := exchange(t, p, ln, 10, 10, true)
		defer cc.Close()
		if err := sc.(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
		sc.Close()
		cc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := cc.Read(make([]byte, 1)); !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("client read after the server's reset: %v, want ECONNRESET", err)
		}
		wantReasons(t, o, "client", 1, nil, map[Reason]uint64{ReasonReset: 1})
		wantReasons(t, o, "server", 1, nil, nil)
		for _, side := range []string{"client", "server"} {
			if tt := o.tot[side]; tt.opened != 1 || tt.closed != 1 || tt.failed != 0 {
				t.Errorf("%s: opened=%d closed=%d failed=%d, want 1 1 0", side, tt.opened, tt.closed, tt.failed)
			}
		}
		if d := errnoDelta(tr, before, unix.ECONNRESET); d != 1 {
			t.Errorf("connection errors ECONNRESET: +%d, want +1", d)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		ln, port := listen(t, p, false)
		o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
		before := tr.Stats().CloseErrors
		cc, sc := exchange(t, p, ln, 10, 10, true)
		defer cc.Close()
		defer sc.Close()
		rc, err := cc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 500)
		}); err != nil || serr != nil {
			t.Fatalf("TCP_USER_TIMEOUT: %v %v", err, serr)
		}
		// The server stops receiving: the client's data is never
		// acknowledged.
		p.ServerNft(t, fmt.Sprintf("table ip conntrace_abort { chain input { type filter hook input priority 0; policy accept; tcp dport %d drop; }; }", port))
		if _, err := cc.Write(make([]byte, 1000)); err != nil {
			t.Fatalf("client write: %v", err)
		}
		cc.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(cc, make([]byte, 1)); !errors.Is(err, unix.ETIMEDOUT) {
			t.Fatalf("client read while the server is cut off: %v, want ETIMEDOUT", err)
		}
		wantReasons(t, o, "client", 1, nil, map[Reason]uint64{ReasonTimeout: 1})
		if tt := o.tot["client"]; tt.opened != 1 || tt.closed != 1 || tt.failed != 0 {
			t.Errorf("client: opened=%d closed=%d failed=%d, want 1 1 0", tt.opened, tt.closed, tt.failed)
		}
		if d := errnoDelta(tr, before, unix.ETIMEDOUT); d != 1 {
			t.Errorf("connection errors ETIMEDOUT: +%d, want +1", d)
		}
	})
}
