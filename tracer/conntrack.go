package tracer

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// IPTranslation is the other side of a NAT, as the kernel's conntrack sees
// it: the addresses and ports it expects in the reply direction. For a
// connection to a DNATed virtual address, ReplSrcIP:ReplSrcPort is the real
// peer; for a SNATed one, ReplDstIP:ReplDstPort the address the peer sees.
type IPTranslation struct {
	ReplSrcIP, ReplDstIP     netip.Addr
	ReplSrcPort, ReplDstPort uint16
}

type ctKey struct {
	proto      uint8
	src, dst   netip.Addr
	sport, dpt uint16
}

// conntracker reads the NATed entries of the conntrack tables of the
// network namespaces that have traced connections, and of the exporter's
// own (where a host NATs its containers' traffic).
//
// vishvananda/netlink has dumps but no conntrack event subscription, so the
// tables are dumped, at most every interval and only when a connection
// still waits for its answer. A translation, once found, stays with its
// connection; state is bounded by maxState entries (beyond: counted).
type conntracker struct {
	procRoot string
	interval time.Duration
	maxState int

	selfNS  uint32
	handles map[uint32]*netlink.Handle // netns inode → netlink socket in it
	missing map[uint32]time.Time       // netns not found, and when we looked
	tables  map[uint32]map[ctKey]IPTranslation
	decided map[ConnKey]*IPTranslation // nil value: looked up, not NATed
	last    time.Time                  // of the last dump
	dumped  map[uint32]uint64          // netns inode → its table's dump start, in kernel time

	errors, full uint64
}

func newConntracker(cfg *Config) (*conntracker, error) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(cfg.ProcRoot, "self/ns/net"), &st); err != nil {
		return nil, fmt.Errorf("conntrack: reading the exporter's netns: %w", err)
	}
	return &conntracker{
		procRoot: cfg.ProcRoot,
		interval: cfg.ConntrackInterval,
		maxState: cfg.ConntrackMaxStateSize,
		selfNS:   uint32(st.Ino),
		handles:  map[uint32]*netlink.Handle{},
		missing:  map[uint32]time.Time{},
		tables:   map[uint32]map[ctKey]IPTranslation{},
		decided:  map[ConnKey]*IPTranslation{},
		dumped:   map[uint32]uint64{},
	}, nil
}

// translate sets IPTranslation on the connections of a read, dumping the
// tables first when one of them, or of the closed connections waiting for
// theirs (closed: looked up by the caller), is not decided and the last
// dump is old enough; it says whether it dumped. The decisions of
// connections gone from both are forgotten.
func (ct *conntracker) translate(conns []ConnectionStats, closed []closedRef, now time.Time) (dumped bool) {
	seen := make(map[ConnKey]struct{}, len(conns)+len(closed))
	wanted := map[uint32]struct{}{ct.selfNS: {}}
	waiting := map[uint32]struct{}{}
	see := func(key ConnKey, netns uint32, start uint64) {
		seen[key] = struct{}{}
		wanted[netns] = struct{}{}
		if _, ok := ct.decided[key]; !ok && !ct.knownAt(netns, start) {
			waiting[netns] = struct{}{}
		}
	}
	for i := range conns {
		see(conns[i].Key, conns[i].NetNS, conns[i].StartEpoch)
	}
	for _, r := range closed {
		see(r.key, r.netns, r.start)
	}
	if len(waiting) > 0 && now.Sub(ct.last) >= ct.interval {
		// A dump walks the whole (global) conntrack hash: only the
		// namespaces with a connection waiting, and the exporter's own.
		waiting[ct.selfNS] = struct{}{}
		ct.dump(wanted, waiting, now)
		dumped = true
	}
	for i := range conns {
		conns[i].IPTranslation = ct.lookup(&conns[i], dumped)
	}
	for k := range ct.decided {
		if _, ok := seen[k]; !ok {
			delete(ct.decided, k)
		}
	}
	return dumped
}

// lookup returns the translation of a read's connection. With fresh tables
// a connection not found is decided: not NATed.
func (ct *conntracker) lookup(c *ConnectionStats, fresh bool) *IPTranslation {
	if tr, ok := ct.decided[c.Key]; ok {
		return tr
	}
	tr, found := ct.find(c)
	if found || fresh {
		ct.decided[c.Key] = tr
	}
	return tr
}

// lookupClosed returns the translation of a closed connection, and whether
// it is known: decided while it was open, in the tables, or started before
// the last dump and absent from it (its conntrack entry exists from its
// first packet: not NATed). The connection is finished: its decision goes.
// One not known waits for the next dump.
func (ct *conntracker) lookupClosed(c *ConnectionStats) (*IPTranslation, bool) {
	if tr, ok := ct.decided[c.Key]; ok {
		delete(ct.decided, c.Key)
		return tr, true
	}
	if tr, ok := ct.find(c); ok {
		return tr, true
	}
	return nil, ct.known(c)
}

// known says whether the tables c is looked up in (its namespace's and the
// exporter's) were dumped after c started: c was in them if NATed.
func (ct *conntracker) known(c *ConnectionStats) bool { return ct.knownAt(c.NetNS, c.StartEpoch) }

// knownAt is known of a connection of namespace netns started at start.
func (ct *conntracker) knownAt(netns uint32, start uint64) bool {
	own, self := ct.dumped[netns], ct.dumped[ct.selfNS]
	return start != 0 && own > start && self > start
}

// find looks c up in the tables of its namespace, then the exporter's.
func (ct *conntracker) find(c *ConnectionStats) (*IPTranslation, bool) {
	return ct.findKey(c.NetNS, ctKeyOf(c))
}

// ctKeyOf is the conntrack tuple of c as it sent.
func ctKeyOf(c *ConnectionStats) ctKey {
	proto := uint8(unix.IPPROTO_TCP)
	if c.Type == UDP {
		proto = unix.IPPROTO_UDP
	}
	return ctKey{proto: proto, src: c.Source, dst: c.Dest, sport: c.SPort, dpt: c.DPort}
}

// findKey looks k up in the tables of netns, then the exporter's.
func (ct *conntracker) findKey(netns uint32, k ctKey) (*IPTranslation, bool) {
	for _, ns := range []uint32{netns, ct.selfNS} {
		if tr, ok := ct.tables[ns][k]; ok {
			return &tr, true
		}
	}
	return nil, false
}

// dump rebuilds the tables of the namespaces in dumpNS. Namespaces no
// longer wanted lose their table and netlink socket (a socket keeps its
// netns alive).
func (ct *conntracker) dump(wanted, dumpNS map[uint32]struct{}, now time.Time) {
	ct.last = now
	start := ktimeNow()
	for ns, h := range ct.handles {
		if _, ok := wanted[ns]; !ok {
			h.Close()
			delete(ct.handles, ns)
		}
	}
	total := 0
	for ns, t := range ct.tables {
		_, keep := wanted[ns]
		_, redo := dumpNS[ns]
		switch {
		case !keep || redo:
			delete(ct.tables, ns)
			delete(ct.dumped, ns)
		default:
			total += len(t)
		}
	}
	for ns := range dumpNS {
		h := ct.handle(ns, now)
		if h == nil {
			continue
		}
		t := map[ctKey]IPTranslation{}
		complete := true // every NAT entry of the namespace is in t
		for _, family := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
			flows, err := h.ConntrackTableList(netlink.ConntrackTable, family)
			if err != nil {
				ct.errors++ // ENOBUFS, or conntrack not loaded: survive, count
				complete = false
				continue
			}
			for _, f := range flows {
				if !isNAT(f) {
					continue
				}
				if total >= ct.maxState {
					ct.full++
					complete = false
					continue
				}
				// Both directions, so that either end of a NATed
				// connection finds the other side.
				fw, rv := tupleKey(&f.Forward), tupleKey(&f.Reverse)
				t[fw] = translationOf(&f.Reverse)
				t[ctKey{proto: rv.proto, src: rv.src, dst: rv.dst, sport: rv.sport, dpt: rv.dpt}] = translationOf(&f.Forward)
				total += 2
			}
		}
		ct.tables[ns] = t
		if complete {
			ct.dumped[ns] = start
		}
	}
}

func isNAT(f *netlink.ConntrackFlow) bool {
	return !f.Forward.SrcIP.Equal(f.Reverse.DstIP) || !f.Forward.DstIP.Equal(f.Reverse.SrcIP) ||
		f.Forward.SrcPort != f.Reverse.DstPort || f.Forward.DstPort != f.Reverse.SrcPort
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func tupleKey(t *netlink.IPTuple) ctKey {
	return ctKey{proto: t.Protocol, src: addrOf(t.SrcIP), dst: addrOf(t.DstIP), sport: t.SrcPort, dpt: t.DstPort}
}

func translationOf(t *netlink.IPTuple) IPTranslation {
	return IPTranslation{ReplSrcIP: addrOf(t.SrcIP), ReplDstIP: addrOf(t.DstIP), ReplSrcPort: t.SrcPort, ReplDstPort: t.DstPort}
}

// handle returns a netlink socket in the netns with that inode, found
// among the named namespaces and those of the processes. A netns not
// found is not looked for again for a while.
func (ct *conntracker) handle(ino uint32, now time.Time) *netlink.Handle {
	if h := ct.handles[ino]; h != nil {
		return h
	}
	if t, ok := ct.missing[ino]; ok && now.Sub(t) < 30*time.Second {
		return nil
	}
	path := findNetNS(ct.procRoot, ino)
	if path == "" {
		ct.missing[ino] = now
		return nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		ct.missing[ino] = now
		return nil
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, syscall.NETLINK_NETFILTER)
	if err != nil {
		ct.errors++
		return nil
	}
	delete(ct.missing, ino)
	ct.handles[ino] = h
	return h
}

// findNetNS returns a path to the netns with inode ino: a named namespace
// (ip netns), or a process's.
func findNetNS(procRoot string, ino uint32) string {
	var candidates []string
	if named, err := filepath.Glob("/run/netns/*"); err == nil {
		candidates = append(candidates, named...)
	}
	if procs, err := os.ReadDir(procRoot); err == nil {
		for _, p := range procs {
			if p.Name()[0] >= '0' && p.Name()[0] <= '9' {
				candidates = append(candidates, filepath.Join(procRoot, p.Name(), "ns/net"))
			}
		}
	}
	for _, c := range candidates {
		var st unix.Stat_t
		if unix.Stat(c, &st) == nil && uint32(st.Ino) == ino {
			return c
		}
	}
	return ""
}

func (ct *conntracker) close() {
	for _, h := range ct.handles {
		h.Close()
	}
	ct.handles = nil
}
