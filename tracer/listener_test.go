package tracer

import (
	"net"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// rawListener opens a TCP listener in the server namespace with raw
// socket calls: bound to port (0: not bound at all, listen() picks the
// port) with SO_REUSEPORT when reuse is set. It returns the listener and
// its port.
func rawListener(t *testing.T, p *nettest.Pair, port uint16, reuse, bind bool) (net.Listener, uint16) {
	t.Helper()
	var ln net.Listener
	err := nettest.Do(p.Server, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if reuse {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				unix.Close(fd)
				return err
			}
		}
		if bind {
			sa := &unix.SockaddrInet4{Port: int(port), Addr: p.Server4.As4()}
			if err := unix.Bind(fd, sa); err != nil {
				unix.Close(fd)
				return err
			}
		}
		if err := unix.Listen(fd, 16); err != nil {
			unix.Close(fd)
			return err
		}
		f := os.NewFile(uintptr(fd), "listener")
		defer f.Close()
		ln, err = net.FileListener(f)
		return err
	})
	if err != nil {
		t.Fatalf("raw listener: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

// checkListenerHeld: a connection accepted from port gets the listening
// process, and the port is in the mapping.
func checkListenerHeld(t *testing.T, tr *Tracer, p *nettest.Pair, ln net.Listener, port uint16) {
	t.Helper()
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	exchangeTo(t, p, ln, net.JoinHostPort(p.Server4.String(), strconv.Itoa(int(port))), 10, 20, false)
	o.waitFor("the server end", func(tot map[string]*kTotals) bool { return tot["server"].closedSeen == 1 })
	if pids := o.tot["server"].pids; !pids[uint32(os.Getpid())] || len(pids) != 1 {
		t.Errorf("accepted connection's processes %v, want the listener's, %d", pids, os.Getpid())
	}
	if !tr.PortMapping().IsListening(PortKey{NetNS: nsInodeOf(t, p, true), Port: port, Type: TCP}) {
		t.Errorf("port %d not in the mapping while a listener holds it", port)
	}
}

// listen() without bind() picks its port after the socket is in LISTEN, so
// the state change shows port 0: the listener is known by its real port all
// the same, and its accepted connections get its process (issue 11.12:
// stored under port 0, they had none).
func TestListenWithoutBind(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	ln, port := rawListener(t, p, 0, false, false)
	checkListenerHeld(t, tr, p, ln, port)
}

// Several SO_REUSEPORT listeners share a port: closing one leaves the
// others' entry (issue 11.12: it deleted the port's entry, so the others'
// connections had no process, and the port left the mapping). The first
// listens before the tracer starts (found by the seeding pass), the second
// after (by the state change): each counted once.
func TestReusePortListenerCloseKeepsTheOthers(t *testing.T) {
	nettest.RequireRoot(t)
	p := nettest.NewPair(t)
	first, port := rawListener(t, p, 7700, true, true)
	tr := newTestTracer(t, nil)
	second, _ := rawListener(t, p, port, true, true)
	second.Close()
	checkListenerHeld(t, tr, p, first, port)
	first.Close()
	if _, err := tr.GetActiveConnections(t.Name()); err != nil {
		t.Fatal(err)
	}
	if tr.PortMapping().IsListening(PortKey{NetNS: nsInodeOf(t, p, true), Port: port, Type: TCP}) {
		t.Errorf("port %d still in the mapping after its last listener closed", port)
	}
}
