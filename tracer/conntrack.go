package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
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
// The tables are dumped, at most every interval and only when a connection
// still waits for its answer. The kernel sends only the NATed entries
// (a dump filtered by status, Linux 5.15; see dumpNAT): on a host whose
// conntrack table holds every connection of the last minutes, parsing the
// whole table was the exporter's largest CPU cost per connection. A
// translation, once found, stays with its connection; state is bounded by
// maxState entries (beyond: counted).
type conntracker struct {
	procRoot string
	interval time.Duration
	maxState int

	selfNS  uint32
	handles map[uint32]*conntrack.Conn // netns inode → netlink socket in it
	missing map[uint32]time.Time       // netns not found, and when we looked
	tables  map[uint32]map[ctKey]IPTranslation
	decided map[ConnKey]*IPTranslation // nil value: looked up, not NATed
	last    time.Time                  // of the last dump
	dumped  map[uint32]uint64          // netns inode → its table's dump start, in kernel time
	// statusFilter is whether the kernel filters dumps by status: unknown
	// until a dump returned an entry (kernels before 5.15 ignore the
	// filter and send every entry), whole from the start with IPVS.
	statusFilter filterSupport

	errors, full uint64
	// parsed counts the entries received from the kernel, NATed or not
	// (what a dump costs in user space; the tests and benchmarks read it).
	parsed uint64
}

type filterSupport uint8

const (
	filterUnknown filterSupport = iota
	filterWorks
	// filterWhole: tables are read whole, the filter ignored or refused
	// by the kernel, or not asked for with IPVS (see ipvsLoaded).
	filterWhole
)

// ipvsLoaded says whether the kernel has IPVS (the ip_vs module, or built
// in), under sysRoot (/sys). IPVS NAT (kube-proxy's IPVS mode, LVS-NAT)
// rewrites a conntrack entry's reply tuple without setting its NAT status
// bits, so a dump filtered by status would miss its translations: with
// IPVS, tables are read whole.
func ipvsLoaded(sysRoot string) bool {
	_, err := os.Stat(filepath.Join(sysRoot, "module", "ip_vs"))
	return err == nil
}

func newConntracker(cfg *Config) (*conntracker, error) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(cfg.ProcRoot, "self/ns/net"), &st); err != nil {
		return nil, fmt.Errorf("conntrack: reading the exporter's netns: %w", err)
	}
	filter := filterUnknown
	if ipvsLoaded("/sys") {
		filter = filterWhole
	}
	return &conntracker{
		statusFilter: filter,
		procRoot:     cfg.ProcRoot,
		interval:     cfg.ConntrackInterval,
		maxState:     cfg.ConntrackMaxStateSize,
		selfNS:       uint32(st.Ino),
		handles:      map[uint32]*conntrack.Conn{},
		missing:      map[uint32]time.Time{},
		tables:       map[uint32]map[ctKey]IPTranslation{},
		decided:      map[ConnKey]*IPTranslation{},
		dumped:       map[uint32]uint64{},
	}, nil
}

// translate sets IPTranslation on the connections of a read, dumping the
// tables first when one of them, or of the closed connections waiting for
// theirs (closed: looked up by the caller), is not decided and the last
// dump is old enough; it says whether it dumped. A decided connection
// costs one lookup: at 200,000 connections, a set of the read's keys built
// at every scrape was a fifth of its CPU; the decisions of connections
// gone are pruned once they are as many as the read's (see prune).
func (ct *conntracker) translate(conns []*ConnectionStats, closed []closedRef, now time.Time) (dumped bool) {
	wanted := map[uint32]struct{}{ct.selfNS: {}}
	waiting := map[uint32]struct{}{}
	var undecided []*ConnectionStats
	last := ct.selfNS
	for _, c := range conns {
		if c.NetNS != last { // a read comes namespace by namespace
			wanted[c.NetNS], last = struct{}{}, c.NetNS
		}
		if tr, ok := ct.decided[c.Key]; ok {
			c.IPTranslation = tr
			continue
		}
		undecided = append(undecided, c)
		if !ct.knownAt(c.NetNS, c.StartEpoch) {
			waiting[c.NetNS] = struct{}{}
		}
	}
	for _, r := range closed {
		wanted[r.netns] = struct{}{}
		if _, ok := ct.decided[r.key]; !ok && !ct.knownAt(r.netns, r.start) {
			waiting[r.netns] = struct{}{}
		}
	}
	if len(waiting) > 0 && now.Sub(ct.last) >= ct.interval {
		// A dump walks the whole (global) conntrack hash: only the
		// namespaces with a connection waiting, and the exporter's own.
		waiting[ct.selfNS] = struct{}{}
		ct.dump(wanted, waiting, now)
		dumped = true
	}
	for _, c := range undecided {
		// Decided "not NATed" only by a complete dump of its tables
		// (knownAt): one that failed or was cut short decides nothing.
		c.IPTranslation = ct.lookup(c, dumped && ct.knownAt(c.NetNS, c.StartEpoch))
	}
	if len(ct.decided) > 2*(len(conns)+len(closed))+1024 {
		ct.prune(conns, closed)
	}
	return dumped
}

// prune forgets the decisions of connections in neither the read nor the
// closed ones waiting. Keys are never reused, so a stale decision is only
// memory, bounded by translate.
func (ct *conntracker) prune(conns []*ConnectionStats, closed []closedRef) {
	seen := make(map[ConnKey]struct{}, len(conns)+len(closed))
	for _, c := range conns {
		seen[c.Key] = struct{}{}
	}
	for _, r := range closed {
		seen[r.key] = struct{}{}
	}
	for k := range ct.decided {
		if _, ok := seen[k]; !ok {
			delete(ct.decided, k)
		}
	}
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
			found := tr // allocated when found only (&tr would be, at every look)
			return &found, true
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
		flows, err := ct.dumpNAT(h)
		if err != nil {
			ct.errors++ // ENOBUFS, or conntrack not loaded: survive, count
			complete = false
		}
		for i := range flows {
			f := &flows[i]
			if !isNAT(f) {
				continue
			}
			fw, rv := tupleKey(&f.TupleOrig), tupleKey(&f.TupleReply)
			if _, dup := t[fw]; dup {
				continue // both NAT bits: in both filtered dumps
			}
			if total >= ct.maxState {
				ct.full++
				complete = false
				continue
			}
			// Both directions, so that either end of a NATed
			// connection finds the other side.
			t[fw] = translationOf(&f.TupleReply)
			t[rv] = translationOf(&f.TupleOrig)
			total += 2
		}
		ct.tables[ns] = t
		if complete {
			ct.dumped[ns] = start
		}
	}
}

// natStatus are the status bits of an entry whose tuple NAT changed
// (IPS_SRC_NAT, IPS_DST_NAT; the *_DONE bits are set on every entry once a
// NAT table exists, null bindings included).
var natStatus = []conntrack.Status{conntrack.StatusSrcNAT, conntrack.StatusDstNAT}

// dumpNAT returns the NATed entries of h's namespace, both families: one
// dump per NAT status bit, filtered by the kernel (an entry with both bits
// comes twice: dump keeps one). A kernel that ignores the filter (before
// 5.15) sends every entry at the first dump: then that dump is the whole
// table, and later dumps ask for it once, unfiltered; so do they after a
// kernel refused the filter (EINVAL, EOPNOTSUPP) while an unfiltered dump
// worked, and with IPVS (filterWhole). isNAT still checks each entry.
func (ct *conntracker) dumpNAT(h *conntrack.Conn) ([]conntrack.Flow, error) {
	if ct.statusFilter == filterWhole {
		return ct.dumpWhole(h)
	}
	var all []conntrack.Flow
	for _, st := range natStatus {
		flows, err := h.DumpFilter(conntrack.NewFilter().Status(st), nil)
		ct.parsed += uint64(len(flows))
		if err != nil && ct.statusFilter == filterUnknown && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
			// Refused rather than ignored: read it whole, and if
			// that works, from then on.
			if flows, err = ct.dumpWhole(h); err == nil {
				ct.statusFilter = filterWhole
			}
			return flows, err
		}
		if err != nil {
			return all, err
		}
		for i := range flows {
			if flows[i].Status&st == 0 {
				ct.statusFilter = filterWhole
				return flows, nil // the whole table
			}
		}
		if len(flows) > 0 {
			ct.statusFilter = filterWorks
		}
		all = append(all, flows...)
	}
	return all, nil
}

// dumpWhole returns every entry of h's namespace.
func (ct *conntracker) dumpWhole(h *conntrack.Conn) ([]conntrack.Flow, error) {
	flows, err := h.Dump(nil)
	ct.parsed += uint64(len(flows))
	return flows, err
}

func isNAT(f *conntrack.Flow) bool {
	o, r := &f.TupleOrig, &f.TupleReply
	return o.IP.SourceAddress.Unmap() != r.IP.DestinationAddress.Unmap() ||
		o.IP.DestinationAddress.Unmap() != r.IP.SourceAddress.Unmap() ||
		o.Proto.SourcePort != r.Proto.DestinationPort || o.Proto.DestinationPort != r.Proto.SourcePort
}

func tupleKey(t *conntrack.Tuple) ctKey {
	return ctKey{proto: t.Proto.Protocol, src: t.IP.SourceAddress.Unmap(), dst: t.IP.DestinationAddress.Unmap(),
		sport: t.Proto.SourcePort, dpt: t.Proto.DestinationPort}
}

func translationOf(t *conntrack.Tuple) IPTranslation {
	return IPTranslation{ReplSrcIP: t.IP.SourceAddress.Unmap(), ReplDstIP: t.IP.DestinationAddress.Unmap(),
		ReplSrcPort: t.Proto.SourcePort, ReplDstPort: t.Proto.DestinationPort}
}

// handle returns a netlink socket in the netns with that inode, found
// among the named namespaces and those of the processes. A netns not
// found is not looked for again for a while.
func (ct *conntracker) handle(ino uint32, now time.Time) *conntrack.Conn {
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
	h, err := conntrack.Dial(&netlink.Config{NetNS: int(ns)})
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
