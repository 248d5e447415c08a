package tracer

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vishvananda/netns"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// listenTruth is what the kernel says of a namespace's one listener
// elsewhere: the accept queue of the listening socket (/proc/net/tcp's
// rx_queue, and ss's Recv-Q and Send-Q), the socket's drops (ss -m's d: the
// packets the socket dropped, which counts a handshake ACK dropped for a
// full queue twice, once more than the namespace's ListenDrops), and the
// namespace's TCPSynRetrans (/proc/net/netstat).
type listenTruth struct {
	queue, ssQueue, ssLimit, drops, listenDrops, synAckRetrans uint64
}

// tcpExt returns the TcpExt counters of /proc/net/netstat in namespace ns.
func tcpExt(t *testing.T, ns netns.NsHandle) map[string]uint64 {
	t.Helper()
	return netStats(t, ns, "netstat", "TcpExt:")
}

// tcpMIB returns the Tcp counters of /proc/net/snmp in namespace ns.
func tcpMIB(t *testing.T, ns netns.NsHandle) map[string]uint64 {
	t.Helper()
	return netStats(t, ns, "snmp", "Tcp:")
}

// netStats returns the counters of the lines starting with prefix (a line
// of names, then one of values) of /proc/net/file in namespace ns.
func netStats(t *testing.T, ns netns.NsHandle, file, prefix string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	err := nettest.Do(ns, func() error {
		// /proc/thread-self/net is the namespace of this (locked) thread.
		f, err := os.Open("/proc/thread-self/net/" + file)
		if err != nil {
			return err
		}
		defer f.Close()
		var names []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != prefix {
				continue
			}
			if names == nil {
				names = fields
				continue
			}
			for i, v := range fields {
				if i > 0 && i < len(names) {
					out[names[i]], _ = strconv.ParseUint(v, 10, 64)
				}
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatalf("reading /proc/net/%s: %v", file, err)
	}
	return out
}

// ssListener parses `ss -lntmH sport = :port` of the server namespace: the
// listener's Recv-Q, Send-Q and skmem d.
func ssListener(t *testing.T, p *nettest.Pair, port uint16) (queue, limit, drops uint64) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", p.ServerName, "ss", "-lntmH", "sport", "=", fmt.Sprintf(":%d", port)).CombinedOutput()
	if err != nil {
		t.Fatalf("ss in netns %s: %v: %s", p.ServerName, err, out)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 || f[0] != "LISTEN" {
		t.Fatalf("ss: no listener on port %d: %q", port, out)
	}
	queue, _ = strconv.ParseUint(f[1], 10, 64)
	limit, _ = strconv.ParseUint(f[2], 10, 64)
	m := regexp.MustCompile(`skmem:\(.*\bd(\d+)\)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("ss: no skmem drops: %q", out)
	}
	drops, _ = strconv.ParseUint(m[1], 10, 64)
	return queue, limit, drops
}

func readListenTruth(t *testing.T, p *nettest.Pair, port uint16) listenTruth {
	t.Helper()
	var lt listenTruth
	err := nettest.Do(p.Server, func() error {
		// /proc/thread-self/net is the namespace of this (locked) thread.
		tcp, err := os.ReadFile("/proc/thread-self/net/tcp")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(tcp), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 5 || f[3] != "0A" || !strings.HasSuffix(f[1], fmt.Sprintf(":%04X", port)) {
				continue
			}
			q := strings.SplitN(f[4], ":", 2) // tx_queue:rx_queue, hex
			rx, err := strconv.ParseUint(q[1], 16, 64)
			if err != nil {
				return err
			}
			lt.queue += rx
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading the server namespace's /proc/net: %v", err)
	}
	ext := tcpExt(t, p.Server)
	lt.listenDrops, lt.synAckRetrans = ext["ListenDrops"], ext["TCPSynRetrans"]
	lt.ssQueue, lt.ssLimit, lt.drops = ssListener(t, p, port)
	return lt
}

// A listener with a backlog of 1 that never accepts, and more clients than
// it takes: its accept queue fills (2 connections: the kernel takes one
// more than the backlog), later SYNs and handshake ACKs are dropped, and
// SYN-ACKs go again (the first bare ACK to it is dropped too, so at least
// one). What Listeners reads must be what the kernel's own files say, read
// before and after it with nothing changing between.
func TestListenerSaturation(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	var lfd int
	err := nettest.Do(p.Server, func() error {
		var err error
		if lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0); err != nil {
			return err
		}
		if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: p.Server4.As4()}); err != nil {
			return err
		}
		return unix.Listen(lfd, 1)
	})
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	t.Cleanup(func() { unix.Close(lfd) })
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(sa.(*unix.SockaddrInet4).Port)
	p.ServerNft(t, fmt.Sprintf(`table ip conntrace_listen {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport %d tcp flags & (syn | ack | fin | rst | psh) == ack quota until 60 bytes drop
	}
}`, port))
	var serverNS uint32
	if err := nettest.Do(p.Server, func() error {
		var ok bool
		if serverNS, ok = nsInode("/proc/thread-self/ns/net"); !ok {
			return fmt.Errorf("no inode")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Five non-blocking connects from the client namespace, left open.
	for i := 0; i < 5; i++ {
		err := nettest.Do(p.Client, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			t.Cleanup(func() { unix.Close(fd) })
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: p.Server4.As4()}); err != nil && err != unix.EINPROGRESS {
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
	}
	// The first SYN-ACK retransmission comes after 1 s.
	deadline := time.Now().Add(20 * time.Second)
	for {
		before := readListenTruth(t, p, port)
		ls, err := tr.Listeners()
		if err != nil {
			t.Fatalf("Listeners: %v", err)
		}
		after := readListenTruth(t, p, port)
		var got *ListenerStats
		for i := range ls {
			if ls[i].NetNS == serverNS && ls[i].Port == port {
				got = &ls[i]
			}
		}
		if got == nil {
			t.Fatalf("port %d of netns %d not among the %d listeners read", port, serverNS, len(ls))
		}
		if before == after && before.synAckRetrans > 0 && before.drops > 0 {
			if before.queue != before.ssQueue || before.ssLimit != 1 || before.drops < before.listenDrops {
				t.Errorf("the kernel disagrees with itself: %+v", before)
			}
			if got.QueueLength != before.queue || got.QueueLimit != 1 || got.Drops != before.drops ||
				got.SynAckRetransmits != before.synAckRetrans || got.Sockets != 1 {
				t.Errorf("listener %d: queue %d/%d drops %d SYN-ACK retransmits %d sockets %d; the kernel: queue %d/1 drops %d SYN-ACK retransmits %d, 1 socket",
					port, got.QueueLength, got.QueueLimit, got.Drops, got.SynAckRetransmits, got.Sockets, before.queue, before.drops, before.synAckRetrans)
			}
			if before.queue != 2 {
				t.Errorf("the kernel's accept queue holds %d, want 2 (backlog 1)", before.queue)
			}
			t.Logf("listener %d: %+v", port, *got)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no steady reading with drops and SYN-ACK retransmits within 20 s: last %+v, then %+v; read %+v", before, after, *got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
