package collector

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/conntrace/conntrace_exporter/cgroup"
	"github.com/conntrace/conntrace_exporter/tracer"
)

// label is one label a traffic metric can carry.
type label uint8

const (
	labelProtocol label = iota
	labelFamily
	labelDirection
	labelRemoteAddr
	labelPort
	labelProcess
	labelPID
	labelNetNS
	labelLocalAddr
	labelNATRemoteAddr
	// The workload: the socket's cgroup, and what its path shows
	// (cgroup.Describe).
	labelCgroup
	labelUnit
	labelContainerID
	labelPodUID
	numLabels
)

// labelNames are the names of the labels, indexed by label. The traffic
// metrics' descriptions list the selected labels in this order, whatever
// the order of --collector.labels.
var labelNames = [numLabels]string{
	labelProtocol:   "protocol",
	labelFamily:     "family",
	labelDirection:  "direction",
	labelRemoteAddr: "remote_addr",
	labelPort:       "port",
	labelProcess:    "process",
	labelPID:        "pid",
	labelNetNS:      "netns",
	labelLocalAddr:  "local_addr",
	// The real peer behind a NAT (conntrack), else remote_addr.
	labelNATRemoteAddr: "nat_remote_addr",
	labelCgroup:        "cgroup",
	labelUnit:          "unit",
	labelContainerID:   "container_id",
	labelPodUID:        "pod_uid",
}

// DefaultLabels is the default of --collector.labels.
const DefaultLabels = "protocol,family,direction,remote_addr,port"

// overflowValue is the value of every label of the overflow series (see
// clientState). No real label set can have it in every label: the
// protocol, family and direction are words of their own, the port, pid and
// netns numbers, the addresses addresses or CIDRs, a cgroup a path ("/..."),
// a unit a name with a suffix (".service"), a container id and a pod uid
// hex digits. Only a process named
// "overflow" could, when process is the only label selected; such a label
// set is counted in the overflow series (see exporter.newSeries).
const overflowValue = "overflow"

// Labels is a selection of the traffic metrics' labels, made by
// ParseLabels. The zero value selects no label: each traffic metric is
// then one series.
type Labels struct{ mask uint16 }

func (l Labels) has(lb label) bool { return l.mask&(1<<lb) != 0 }

// cgroupLabels are the labels that name the workload.
const cgroupLabels = 1<<labelCgroup | 1<<labelUnit | 1<<labelContainerID | 1<<labelPodUID

// Cgroups says whether a selected label names the workload: the tracer
// must then name the cgroups of connections (tracer.Config.Cgroups).
func (l Labels) Cgroups() bool { return l.mask&cgroupLabels != 0 }

// Names returns the selected label names in the order the metrics list them.
func (l Labels) Names() []string {
	var names []string
	for lb := range numLabels {
		if l.has(lb) {
			names = append(names, labelNames[lb])
		}
	}
	return names
}

func (l Labels) String() string { return strings.Join(l.Names(), ",") }

// ParseLabels parses a comma-separated list of label names (spaces around
// names are ignored). An empty list selects no label. An unknown name, an
// empty name (",,") or a name given twice is an error that names it.
func ParseLabels(list string) (Labels, error) {
	var l Labels
	if strings.TrimSpace(list) == "" {
		return l, nil
	}
	for i, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			return Labels{}, fmt.Errorf("empty label name at position %d", i+1)
		}
		lb := label(0)
		for lb < numLabels && labelNames[lb] != name {
			lb++
		}
		if lb == numLabels {
			return Labels{}, fmt.Errorf("unknown label %q (known: %s)", name, strings.Join(labelNames[:], ", "))
		}
		if l.has(lb) {
			return Labels{}, fmt.Errorf("label %q given twice", name)
		}
		l.mask |= 1 << lb
	}
	return l, nil
}

// MustParseLabels is ParseLabels that panics on an error.
func MustParseLabels(list string) Labels {
	l, err := ParseLabels(list)
	if err != nil {
		panic(err)
	}
	return l
}

// labelKey is a label set in comparable form, so that aggregation builds
// no string per connection: every possible label has a field, and the
// fields of the labels not selected stay zero.
//
// An address that falls in an address group is replaced by the group: the
// group's (masked) address, with the prefix length + 1 in *Bits (0 for a
// plain address, so that a group /32 and the address itself differ).
type labelKey struct {
	remote, local, natRemote             netip.Addr
	comm                                 string
	cgroup, unit, container, pod         string
	pid, netns                           uint32
	port                                 uint16
	remoteBits, localBits, natRemoteBits uint8
	protocol                             tracer.ConnectionType
	family                               tracer.ConnectionFamily
	direction                            tracer.ConnectionDirection
}

// AddressGrouper returns the address group (a CIDR) that contains addr, if
// any: the most specific one. (*filter.FileConfig).Group is one.
type AddressGrouper func(addr netip.Addr) (netip.Prefix, bool)

// CgroupNamer names a connection's cgroup id (tracer.ConnectionStats.Cgroup);
// (*tracer.Tracer).Cgroup is one.
type CgroupNamer func(id uint64) (cgroup.Info, bool)

// keyMaker computes the label sets of connections.
type keyMaker struct {
	labels  Labels
	group   AddressGrouper // nil: no groups
	cgroups CgroupNamer    // nil: no names
}

// addr returns an address as keyed: unmapped (an IPv4-mapped IPv6 address
// is its IPv4 address), and replaced by its group if it has one.
func (m *keyMaker) addr(a netip.Addr) (netip.Addr, uint8) {
	a = a.Unmap()
	if m.group != nil && a.IsValid() {
		if p, ok := m.group(a); ok && p.IsValid() {
			p = p.Masked()
			return p.Addr(), uint8(p.Bits() + 1)
		}
	}
	return a, 0
}

// key returns the label set of a connection. The port is the service port
// (ConnectionStats.ServicePort: the serving side's local port, else the
// remote port), so the ephemeral end never becomes a label value.
func (m *keyMaker) key(c *tracer.ConnectionStats) labelKey {
	l := m.labels
	var k labelKey
	if l.has(labelProtocol) {
		k.protocol = c.Type
	}
	if l.has(labelFamily) {
		k.family = c.Family
	}
	if l.has(labelDirection) {
		k.direction = c.Direction
	}
	if l.has(labelRemoteAddr) {
		k.remote, k.remoteBits = m.addr(c.Dest)
	}
	if l.has(labelPort) {
		k.port = c.ServicePort()
	}
	if l.has(labelProcess) {
		k.comm = labelSafe(c.Comm)
	}
	if l.has(labelPID) {
		k.pid = c.Pid
	}
	if l.has(labelNetNS) {
		k.netns = c.NetNS
	}
	if l.has(labelLocalAddr) {
		k.local, k.localBits = m.addr(c.Source)
	}
	if l.has(labelNATRemoteAddr) {
		k.natRemote, k.natRemoteBits = m.addr(c.NATRemote())
	}
	if l.Cgroups() && m.cgroups != nil {
		// An unknown cgroup leaves the four empty (counted by the
		// namer: conntrace_cgroup_misses_total). Names are bytes anyone
		// allowed to make a cgroup chose: made valid UTF-8.
		info, _ := m.cgroups(c.Cgroup)
		if l.has(labelCgroup) {
			k.cgroup = labelSafe(info.Path)
		}
		if l.has(labelUnit) {
			k.unit = labelSafe(info.Unit)
		}
		if l.has(labelContainerID) {
			k.container = info.ContainerID
		}
		if l.has(labelPodUID) {
			k.pod = info.PodUID
		}
	}
	return k
}

// labelSafe makes text from outside (process names, DNS names) a valid
// label value: client_golang refuses invalid UTF-8 by panicking, which
// would fail every scrape that holds the series. Each run of invalid bytes
// becomes U+FFFD.
func labelSafe(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// addrValue is the label value of a keyed address: the address, or the
// group's CIDR. A connection without an address (none should reach here)
// gets an empty value rather than netip's "invalid IP".
func addrValue(a netip.Addr, bits uint8) string {
	switch {
	case !a.IsValid():
		return ""
	case bits > 0:
		return netip.PrefixFrom(a, int(bits)-1).String()
	}
	return a.String()
}

// values returns the label values of k, in the order of l.Names().
func (k labelKey) values(l Labels) []string {
	v := make([]string, 0, numLabels)
	for lb := range numLabels {
		if !l.has(lb) {
			continue
		}
		switch lb {
		case labelProtocol:
			v = append(v, k.protocol.String())
		case labelFamily:
			v = append(v, k.family.String())
		case labelDirection:
			v = append(v, k.direction.String())
		case labelRemoteAddr:
			v = append(v, addrValue(k.remote, k.remoteBits))
		case labelPort:
			v = append(v, strconv.FormatUint(uint64(k.port), 10))
		case labelProcess:
			v = append(v, k.comm)
		case labelPID:
			v = append(v, strconv.FormatUint(uint64(k.pid), 10))
		case labelNetNS:
			v = append(v, strconv.FormatUint(uint64(k.netns), 10))
		case labelLocalAddr:
			v = append(v, addrValue(k.local, k.localBits))
		case labelNATRemoteAddr:
			v = append(v, addrValue(k.natRemote, k.natRemoteBits))
		case labelCgroup:
			v = append(v, k.cgroup)
		case labelUnit:
			v = append(v, k.unit)
		case labelContainerID:
			v = append(v, k.container)
		case labelPodUID:
			v = append(v, k.pod)
		}
	}
	return v
}

// overflowValues returns the label values of the overflow series.
func overflowValues(l Labels) []string {
	v := make([]string, len(l.Names()))
	for i := range v {
		v[i] = overflowValue
	}
	return v
}
