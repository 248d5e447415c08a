package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/bpf"
	"github.com/conntrace/conntrace_exporter/internal/nsexec"
)

// ListenerStats is how saturated one listening TCP port of one network
// namespace is, read at the scrape: its listening sockets' values added up
// (several with SO_REUSEPORT, or one per address), as `ss -lntm` shows them.
type ListenerStats struct {
	NetNS uint32
	Port  uint16
	// Comm is the process of the port's latest listener, where the kernel
	// programs saw it (empty otherwise).
	Comm string
	// Sockets is the number of listening sockets on the port.
	Sockets int
	// QueueLength is the connections established and not yet accepted
	// (sk_ack_backlog), QueueLimit what the queue holds before the kernel
	// drops (sk_max_ack_backlog: the listen() backlog, capped by
	// net.core.somaxconn).
	QueueLength, QueueLimit uint64
	// Drops is the packets the port's listening sockets dropped (sk_drops,
	// ss -lntm's d): SYNs and handshake ACKs that found the accept queue
	// full (an ACK counts twice: the packet and the connection, which the
	// namespace's ListenDrops counts once), and others (a retransmitted SYN
	// of a pending handshake, TCP_DEFER_ACCEPT's bare ACK, a filtered
	// packet). Monotonic while the port has a listening socket, however
	// they come and go (see listenDrops).
	Drops uint64
	// SynAckRetransmits is the SYN-ACKs the port sent again, since its
	// first listener was traced (0 without tcp_retransmit_synack).
	SynAckRetransmits uint64

	sockDrops map[uint32]uint64 // each socket's drops, by inode, while read
}

type listenerKey struct {
	netns uint32
	port  uint16
}

// Listeners reads every listening TCP port: in the exporter's network
// namespace and in every other one a process is in (or named in
// /run/netns), through sock_diag. A namespace that cannot be read
// (entering it needs CAP_SYS_ADMIN) is skipped and counted in
// lost_total{reason="listener_read_error"}; the error names the first.
func (t *Tracer) Listeners() ([]ListenerStats, error) {
	t.listenMu.Lock()
	defer t.listenMu.Unlock()
	if t.listenComms == nil {
		t.listenComms = comms{}
	}
	found := map[listenerKey]*ListenerStats{}
	var firstErr error
	fail := func(err error) {
		t.listenErrors.Add(1)
		if firstErr == nil {
			firstErr = err
		}
	}
	procRoot := t.cfg.ProcRoot
	self, ok := nsInode(filepath.Join(procRoot, "self", "ns", "net"))
	if !ok {
		return nil, fmt.Errorf("listeners: %s/self/ns/net is not readable", procRoot)
	}
	if err := diagListeners(self, found); err != nil {
		fail(fmt.Errorf("listeners of the exporter's network namespace: %w", err))
	}
	paths, err := netnsPaths(procRoot)
	if err != nil {
		fail(fmt.Errorf("listeners: network namespaces: %w", err))
	}
	for _, path := range paths {
		// Opened once: its inode and what is read are the same
		// namespace's, even if the path's process exits meanwhile (then
		// the namespace is skipped, not an error).
		ns, err := netns.GetFromPath(path)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ESRCH) {
				fail(fmt.Errorf("listeners of network namespace %s: %w", path, err))
			}
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(ns), &st); err != nil {
			ns.Close()
			fail(fmt.Errorf("listeners of network namespace %s: %w", path, err))
			continue
		}
		if err := nsexec.Do(ns, func() error { return diagListeners(uint32(st.Ino), found) }); err != nil {
			fail(fmt.Errorf("listeners of network namespace %s: %w", path, err))
		}
		ns.Close()
	}
	// What the kernel programs know of each port: its process, its
	// SYN-ACK retransmissions.
	if t.objs.Listeners != nil {
		var k bpf.ConntraceListenerKey
		var v bpf.ConntraceListener
		it := t.objs.Listeners.Iterate()
		for it.Next(&k, &v) {
			if l := found[listenerKey{k.Netns, k.Port}]; l != nil {
				l.Comm = t.listenComms.get(v.Comm)
				l.SynAckRetransmits = v.SynackRetrans
			}
		}
	}
	t.listenDrops.update(found)
	out := make([]ListenerStats, 0, len(found))
	for _, l := range found {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NetNS != out[j].NetNS {
			return out[i].NetNS < out[j].NetNS
		}
		return out[i].Port < out[j].Port
	})
	return out, firstErr
}

// diagListeners adds the listening TCP sockets (IPv4 and IPv6) of the
// current thread's network namespace, netns, to found.
func diagListeners(netns uint32, found map[listenerKey]*ListenerStats) error {
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		req.AddData(&listenDiagRequest{family: family})
		err := req.ExecuteIter(unix.NETLINK_INET_DIAG, nl.SOCK_DIAG_BY_FAMILY, func(msg []byte) bool {
			port, queue, limit, drops, inode, ok := parseListenDiag(msg)
			if !ok {
				return true
			}
			k := listenerKey{netns, port}
			l := found[k]
			if l == nil {
				l = &ListenerStats{NetNS: netns, Port: port}
				found[k] = l
			}
			l.Sockets++
			l.QueueLength += uint64(queue)
			l.QueueLimit += uint64(limit)
			if l.sockDrops == nil {
				l.sockDrops = map[uint32]uint64{}
			}
			l.sockDrops[inode] += uint64(drops)
			return true
		})
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			if family == unix.AF_INET6 && errors.Is(err, syscall.ENOENT) {
				continue // no IPv6 in this kernel
			}
			if errors.Is(err, syscall.ENOENT) {
				// The kernel loads its tcp_diag module on first use
				// (request_module); where it cannot, sock_diag has no
				// TCP handler.
				return fmt.Errorf("sock_diag of TCP listeners: %w (is the kernel's tcp_diag module loadable? modprobe tcp_diag)", err)
			}
			return fmt.Errorf("sock_diag of TCP listeners: %w", err)
		}
	}
	return nil
}

// listenDiagRequest is struct inet_diag_req_v2 for the listening TCP
// sockets of a family, with their memory counters (INET_DIAG_SKMEMINFO:
// the drops).
type listenDiagRequest struct{ family uint8 }

const sizeofInetDiagReqV2 = 56

func (r *listenDiagRequest) Len() int { return sizeofInetDiagReqV2 }

func (r *listenDiagRequest) Serialize() []byte {
	b := make([]byte, sizeofInetDiagReqV2)
	b[0] = r.family
	b[1] = unix.IPPROTO_TCP
	b[2] = 1 << (netlink.INET_DIAG_SKMEMINFO - 1)
	binary.NativeEndian.PutUint32(b[4:], 1<<unix.BPF_TCP_LISTEN)
	return b
}

// The layout of struct inet_diag_msg, and the index of the drops in the
// INET_DIAG_SKMEMINFO array (SK_MEMINFO_DROPS).
const (
	sizeofInetDiagMsg = 72
	skMeminfoDrops    = 8
)

// parseListenDiag reads one struct inet_diag_msg of a listening socket:
// its port, accept queue length and limit (idiag_rqueue, idiag_wqueue for
// a listener) and drops.
func parseListenDiag(msg []byte) (port uint16, queue, limit, drops, inode uint32, ok bool) {
	if len(msg) < sizeofInetDiagMsg || msg[1] != unix.BPF_TCP_LISTEN {
		return 0, 0, 0, 0, 0, false
	}
	port = binary.BigEndian.Uint16(msg[4:6])
	queue = binary.NativeEndian.Uint32(msg[56:60])
	limit = binary.NativeEndian.Uint32(msg[60:64])
	inode = binary.NativeEndian.Uint32(msg[68:72])
	attrs, err := nl.ParseRouteAttr(msg[sizeofInetDiagMsg:])
	if err != nil {
		return port, queue, limit, 0, inode, true
	}
	for _, a := range attrs {
		if a.Attr.Type == netlink.INET_DIAG_SKMEMINFO && len(a.Value) >= 4*(skMeminfoDrops+1) {
			drops = binary.NativeEndian.Uint32(a.Value[4*skMeminfoDrops:])
		}
	}
	return port, queue, limit, drops, inode, true
}

// listenDrops keeps each port's drops monotonic: a port's listening
// sockets each count their own (sk_drops), so when one of several closes
// (a SO_REUSEPORT worker restarting) their sum would go down, and
// Prometheus would take it for a reset and count the others' whole past
// again. The drops of a socket gone are kept in the port's retired sum,
// until the port has no listening socket left. Bounded by the listening
// sockets of the host.
type listenDrops struct {
	ports map[listenerKey]*portDrops
}

type portDrops struct {
	retired uint64
	last    map[uint32]uint64 // socket inode -> its drops at the last read
}

// update sets each found port's Drops: its retired sockets' and its
// sockets' now. Ports not found are forgotten.
func (d *listenDrops) update(found map[listenerKey]*ListenerStats) {
	if d.ports == nil {
		d.ports = map[listenerKey]*portDrops{}
	}
	for k := range d.ports {
		if found[k] == nil {
			delete(d.ports, k)
		}
	}
	for k, l := range found {
		p := d.ports[k]
		if p == nil {
			p = &portDrops{}
			d.ports[k] = p
		}
		for ino, n := range p.last {
			if _, ok := l.sockDrops[ino]; !ok {
				p.retired += n
			}
		}
		p.last = l.sockDrops
		l.Drops = p.retired
		for _, n := range l.sockDrops {
			l.Drops += n
		}
		l.sockDrops = nil
	}
}
