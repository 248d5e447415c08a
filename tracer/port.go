package tracer

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/bpf"
	"github.com/conntrace/conntrace_exporter/internal/nsexec"
)

// PortKey is a port something serves on, in one network namespace: the seed
// keyed by port alone, so a port listening in one namespace made clients
// of every other namespace look incoming.
type PortKey struct {
	NetNS uint32
	Port  uint16
	Type  ConnectionType
}

// PortMapping tracks the listening TCP ports and bound UDP ports of every
// network namespace: read from /proc at start-up (readInitialState), then
// kept current from the kernel (TCP: the listeners the BPF programs see
// open and close; UDP: flows of sockets bound to their port).
//
// Direction does not need it (it comes from each socket, see README); the
// debug page shows it (/debug/ports).
type PortMapping struct {
	procRoot string
	mu       sync.RWMutex
	ports    map[PortKey]struct{}
	kernel   map[PortKey]struct{} // TCP listeners last seen in the kernel's map
}

// NewPortMapping returns an empty mapping reading procRoot.
func NewPortMapping(procRoot string) *PortMapping {
	return &PortMapping{procRoot: procRoot, ports: map[PortKey]struct{}{}, kernel: map[PortKey]struct{}{}}
}

// AddMapping records that something serves on k.
func (pm *PortMapping) AddMapping(k PortKey) {
	pm.mu.Lock()
	pm.ports[k] = struct{}{}
	pm.mu.Unlock()
}

// Ports returns the ports held, sorted by namespace, protocol and port.
func (pm *PortMapping) Ports() []PortKey {
	pm.mu.RLock()
	out := make([]PortKey, 0, len(pm.ports))
	for k := range pm.ports {
		out = append(out, k)
	}
	pm.mu.RUnlock()
	slices.SortFunc(out, func(a, b PortKey) int {
		return cmp.Or(cmp.Compare(a.NetNS, b.NetNS), cmp.Compare(a.Type, b.Type), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// syncKernel replaces the TCP listeners learnt from the kernel by listeners.
func (pm *PortMapping) syncKernel(listeners map[PortKey]struct{}) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	for k := range pm.kernel {
		if _, ok := listeners[k]; !ok {
			delete(pm.ports, k)
		}
	}
	for k := range listeners {
		pm.ports[k] = struct{}{}
	}
	pm.kernel = listeners
}

// TCP states in /proc/net/tcp; an unconnected UDP socket shows TCP_CLOSE.
const (
	procTCPListen = 0x0A
	procUDPClose  = 0x07
)

// readInitialState reads the listening TCP sockets and the unconnected
// (bound) UDP sockets of every network namespace: those of the processes
// under procRoot and the named ones (/run/netns). It returns the first
// error but reads everything it can.
func (pm *PortMapping) readInitialState() error {
	seen := map[uint32]bool{}
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	procs, err := os.ReadDir(pm.procRoot)
	keep(err)
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		ino, ok := nsInode(filepath.Join(pm.procRoot, p.Name(), "ns/net"))
		if !ok || seen[ino] {
			continue
		}
		seen[ino] = true
		keep(pm.readNS(ino, filepath.Join(pm.procRoot, p.Name())))
	}
	named, _ := filepath.Glob("/run/netns/*")
	for _, path := range named {
		ino, ok := nsInode(path)
		if !ok || seen[ino] {
			continue
		}
		seen[ino] = true
		// No process lives there: read /proc/thread-self from a thread
		// moved into it.
		keep(nsexec.DoPath(path, func() error { return pm.readNS(ino, filepath.Join(pm.procRoot, "thread-self")) }))
	}
	return firstErr
}

// readNS reads the sockets of the netns that dir (a /proc/<pid> or
// /proc/thread-self) is in.
func (pm *PortMapping) readNS(ino uint32, dir string) error {
	fs, err := procfs.NewFS(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	add := func(st, port uint64, typ ConnectionType, serving uint64) {
		if st == serving && port != 0 {
			pm.AddMapping(PortKey{NetNS: ino, Port: uint16(port), Type: typ})
		}
	}
	// A missing file (no IPv6 in that netns) is not an error.
	missing := func(err error) bool { return err != nil && os.IsNotExist(err) }
	tcp, err := fs.NetTCP()
	if err != nil && !missing(err) {
		return fmt.Errorf("reading %s/net/tcp: %w", dir, err)
	}
	for _, l := range tcp {
		add(l.St, l.LocalPort, TCP, procTCPListen)
	}
	tcp6, err := fs.NetTCP6()
	if err != nil && !missing(err) {
		return fmt.Errorf("reading %s/net/tcp6: %w", dir, err)
	}
	for _, l := range tcp6 {
		add(l.St, l.LocalPort, TCP, procTCPListen)
	}
	udp, err := fs.NetUDP()
	if err != nil && !missing(err) {
		return fmt.Errorf("reading %s/net/udp: %w", dir, err)
	}
	for _, l := range udp {
		add(l.St, l.LocalPort, UDP, procUDPClose)
	}
	udp6, err := fs.NetUDP6()
	if err != nil && !missing(err) {
		return fmt.Errorf("reading %s/net/udp6: %w", dir, err)
	}
	for _, l := range udp6 {
		add(l.St, l.LocalPort, UDP, procUDPClose)
	}
	return nil
}

func nsInode(path string) (uint32, bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0, false
	}
	return uint32(st.Ino), true
}

// syncPorts keeps the port mapping current: the TCP listeners the kernel
// programs track, and the ports of UDP flows of bound sockets. Callers hold
// t.mu.
func (t *Tracer) syncPorts(conns []*ConnectionStats) {
	if t.ports == nil {
		return
	}
	listeners := map[PortKey]struct{}{}
	var k bpf.ConntraceListenerKey
	var v bpf.ConntraceListener
	it := t.objs.Listeners.Iterate()
	for it.Next(&k, &v) {
		listeners[PortKey{NetNS: k.Netns, Port: k.Port, Type: TCP}] = struct{}{}
	}
	t.ports.syncKernel(listeners)
	for _, c := range conns {
		if c.Type == UDP && c.ServerSide {
			t.ports.AddMapping(PortKey{NetNS: c.NetNS, Port: c.SPort, Type: UDP})
		}
	}
}

// PortMapping returns the listening ports of every network namespace.
func (t *Tracer) PortMapping() *PortMapping { return t.ports }
