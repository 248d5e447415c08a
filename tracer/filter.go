package tracer

// Connection filters: the seed's excluded_source_connections and
// excluded_destination_connections (datadog.md §2), plus an include form.
//
// Format: a map from an address spec to a list of port specs.
//
//   - Address spec: "*" (any address, IPv4 and IPv6), an IP address (a host:
//     /32 or /128), or a CIDR (host bits are dropped, as the seed's
//     net.ParseCIDR did: "10.0.0.3/24" is 10.0.0.0/24).
//   - Port spec: an optional protocol prefix "tcp" or "udp" (any case; none
//     means both), then "*" (every port), a port "80" or an inclusive range
//     "53361-53500". Ports are 1-65535.
//
// A filter matches one side of a connection: a source filter the local side
// (ConnectionStats.Source, SPort), a destination filter the remote side
// (Dest, DPort). It matches when its address spec contains the address and
// one of its port specs matches the port and the protocol. Several specs of
// one address OR together ("udp *" and "tcp 11211").
//
// Deliberate differences from the seed, each pinned by a test in
// filter_test.go:
//
//  1. A bad entry is an error, not an entry skipped with a log line: the
//     error names the list (when known), the address key and the offending
//     port spec. Every bad entry is reported at once (errors.Join), in a
//     deterministic order (keys sorted, then the port specs in list order).
//  2. An IPv6 address without a prefix length is a /128 host, like an IPv4
//     address is a /32 (the seed appended /64, so "2001:db8::1" excluded a
//     whole /64). A fully expanded IPv6 address ("2001:db8:0:0:0:0:0:1"),
//     which the seed rejected for lacking "::", is accepted.
//  3. IPv4-mapped IPv6 addresses and prefixes ("::ffff:10.0.0.1",
//     "::ffff:10.0.0.0/104") are unmapped to IPv4 (10.0.0.1/32, 10.0.0.0/8),
//     as the tracer reports connections of IPv4-mapped sockets as IPv4 (and
//     connection addresses are unmapped before matching too). The seed saw
//     the '.' in "::ffff:10.0.0.1" and appended "/32": the IPv6 prefix ::/32,
//     which never matched the IPv4 connection and did match ::1. An IPv6
//     prefix shorter than /96 stays IPv6 and so never matches an IPv4
//     connection (as in the seed); use "*" or an IPv4 CIDR for those.
//  4. The wildcard address is "*" alone. The seed took any key containing a
//     '*' ("10.0.*") as the wildcard, which silently matched every address.
//  5. Two keys of one list that normalise to the same prefix ("10.0.0.1" and
//     "10.0.0.1/32", or "10.0.0.0/24" and "10.0.0.3/24") are an error: the
//     seed kept both, and which ports applied depended on map order.
//  6. Source and destination filters are both checked. The seed's
//     IsBlacklistedConnection checked the destination filters only when
//     there were no source filters (an "else if"), contradicting its own
//     documentation; either side matching now excludes the connection.
//  7. Keys and port specs are trimmed of surrounding white space, and a
//     protocol written after the port ("3333 udp") gets an error saying so.
//  8. Port ranges are kept as ranges (ConnectionFilter.Ranges, sorted and
//     disjoint) instead of being expanded into a map of every port:
//     "1-65535" was 65535 map entries. Ports (the seed's map) is left nil by
//     the parser, and still honoured when set by hand.
//  9. Bounded: at most MaxFilterEntries port specs in all, so a huge file
//     fails with a clear error instead of exhausting memory.
//
// Kept from the seed: "*" with "*" (every port of both protocols) is an error
// for an exclusion, since it would exclude every connection. For the include
// form it is allowed and includes every connection (so it makes the include
// filters a no-op; it can still be written to say so explicitly).

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

const (
	// MaxFilterEntries bounds the port specs (an address key with n port
	// specs counts n) of one filter list, and of all four
	// lists of a ConnectionFilters together.
	MaxFilterEntries = 10000
	// MaxKernelRanges is the most port ranges one KernelFilterEntry may have
	// (the size of the array in the kernel's map value).
	MaxKernelRanges = 16
)

// ConnTypeFilter holds user-defined protocols.
type ConnTypeFilter struct {
	TCP bool
	UDP bool
}

// PortRange is an inclusive range of ports and the protocols it applies to.
type PortRange struct {
	Lo, Hi   uint16
	TCP, UDP bool
}

// Matches reports whether port and protocol t are in r.
func (r PortRange) Matches(port uint16, t ConnectionType) bool {
	return r.Lo <= port && port <= r.Hi && protoIn(r.TCP, r.UDP, t)
}

func protoIn(tcp, udp bool, t ConnectionType) bool {
	return (tcp && t == TCP) || (udp && t == UDP)
}

// ConnectionFilter holds one address spec and its port specs.
type ConnectionFilter struct {
	// IP is the address spec as the seed held it; nil is the wildcard "*".
	IP *net.IPNet
	// AllPorts holds the protocols of a "*" port spec.
	AllPorts ConnTypeFilter
	// Ports is the seed's per-port map. The parsers leave it nil
	// and fills Ranges instead; matching still honours it.
	Ports map[uint16]ConnTypeFilter
	// Ranges holds the port specs other than "*": sorted, disjoint, without
	// the protocols AllPorts already covers.
	Ranges []PortRange
	// Prefix is IP as a normalised netip.Prefix (IPv4-mapped prefixes
	// unmapped). It is the zero Prefix for the wildcard.
	Prefix netip.Prefix
	// Key is the address spec as written.
	Key string
}

// prefix returns the filter's address spec: wild for the wildcard "*", else p.
// ok is false for a hand-built filter whose IP has a non-canonical mask.
func (f *ConnectionFilter) prefix() (p netip.Prefix, wild, ok bool) {
	if f.Prefix.IsValid() {
		return f.Prefix, false, true
	}
	if f.IP == nil {
		return netip.Prefix{}, true, true
	}
	a, aok := netip.AddrFromSlice(f.IP.IP)
	ones, bits := f.IP.Mask.Size()
	if !aok || bits == 0 || bits != a.BitLen() && !(bits == 32 && a.Is4In6()) {
		return netip.Prefix{}, false, false
	}
	if bits == 32 {
		a = a.Unmap()
	}
	return normalisePrefix(netip.PrefixFrom(a, ones)), false, true
}

func (f *ConnectionFilter) matchesAddr(a netip.Addr) bool {
	p, wild, ok := f.prefix()
	switch {
	case wild:
		return true
	case ok:
		return p.Contains(a)
	default:
		return f.IP.Contains(net.IP(a.AsSlice()))
	}
}

func (f *ConnectionFilter) matchesPort(port uint16, t ConnectionType) bool {
	if protoIn(f.AllPorts.TCP, f.AllPorts.UDP, t) {
		return true
	}
	if rangesMatch(f.Ranges, port, t) {
		return true
	}
	if c, ok := f.Ports[port]; ok && protoIn(c.TCP, c.UDP, t) {
		return true
	}
	return false
}

// rangesMatch looks port up in sorted, disjoint ranges.
func rangesMatch(rs []PortRange, port uint16, t ConnectionType) bool {
	if len(rs) <= 8 {
		for _, r := range rs {
			if r.Matches(port, t) {
				return true
			}
		}
		return false
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Hi >= port })
	return i < len(rs) && rs[i].Matches(port, t)
}

// matchSide reports whether one of filters matches address a, port and t.
// An invalid address matches nothing (as the seed's nil address).
func matchSide(filters []*ConnectionFilter, a netip.Addr, port uint16, t ConnectionType) bool {
	if len(filters) == 0 || !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, f := range filters {
		if f.matchesAddr(a) && f.matchesPort(port, t) {
			return true
		}
	}
	return false
}

// FilterError is one bad filter entry.
type FilterError struct {
	// List is the filter list (the config file key); empty when not known.
	List string
	// Key is the address spec as written.
	Key string
	// Spec is the offending port spec, when HasSpec.
	Spec    string
	HasSpec bool
	Err     error
}

func (e *FilterError) Error() string {
	list := e.List
	if list == "" {
		list = "connection filter"
	}
	s := fmt.Sprintf("%s[%q]", list, e.Key)
	if e.HasSpec {
		s += fmt.Sprintf(": port spec %q", e.Spec)
	}
	return s + ": " + e.Err.Error()
}

func (e *FilterError) Unwrap() error { return e.Err }

func countSpecs(filters map[string][]string) int {
	n := 0
	for _, v := range filters {
		n += max(len(v), 1)
	}
	return n
}

func checkFilterCount(what string, n int) error {
	if n > MaxFilterEntries {
		if what == "" {
			what = "connection filters"
		}
		return fmt.Errorf("%s: %d port specs, more than the limit of %d", what, n, MaxFilterEntries)
	}
	return nil
}

// parseFilterList parses one list; errs holds *FilterError values, ordered
// by key then by port spec.
func parseFilterList(list string, filters map[string][]string, include bool) (out []*ConnectionFilter, errs []error) {
	keys := make([]string, 0, len(filters))
	for k := range filters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	seen := make(map[string]string, len(keys)) // normalised prefix -> key
	for _, key := range keys {
		specs := filters[key]
		bad := func(err error) { errs = append(errs, &FilterError{List: list, Key: key, Err: err}) }
		badSpec := func(spec string, err error) {
			errs = append(errs, &FilterError{List: list, Key: key, Spec: spec, HasSpec: true, Err: err})
		}
		prefix, wild, err := parseFilterAddress(strings.TrimSpace(key))
		if err != nil {
			bad(err)
		} else {
			norm := "*"
			if !wild {
				norm = prefix.String()
			}
			if first, dup := seen[norm]; dup {
				bad(fmt.Errorf("same address as [%q] (both are %s): merge their port specs", first, norm))
				err = errDuplicate
			} else {
				seen[norm] = key
			}
		}
		if len(specs) == 0 {
			bad(errors.New(`empty port list (want at least one port spec, e.g. "*")`))
			continue
		}
		f := &ConnectionFilter{Prefix: prefix, Key: key}
		var ranges []PortRange
		specErr := false
		for _, spec := range specs {
			r, all, perr := parsePortSpec(spec)
			if perr != nil {
				badSpec(spec, perr)
				specErr = true
				continue
			}
			if all {
				f.AllPorts.TCP = f.AllPorts.TCP || r.TCP
				f.AllPorts.UDP = f.AllPorts.UDP || r.UDP
			} else {
				ranges = append(ranges, r)
			}
		}
		if err != nil || specErr {
			continue
		}
		if wild && f.AllPorts.TCP && f.AllPorts.UDP && !include {
			bad(errors.New(`address "*" with port "*" (every port of both protocols) excludes every connection`))
			continue
		}
		if !wild {
			f.IP = prefixToIPNet(prefix)
		}
		f.Ranges = normaliseRanges(ranges, f.AllPorts)
		out = append(out, f)
	}
	return out, errs
}

var errDuplicate = errors.New("duplicate")

// parseFilterAddress parses an address spec (already trimmed).
func parseFilterAddress(k string) (p netip.Prefix, wild bool, err error) {
	switch {
	case k == "":
		return p, false, errors.New(`empty address (want "*", an IP address or a CIDR)`)
	case k == "*":
		return p, true, nil
	case strings.Contains(k, "*"):
		return p, false, errors.New(`invalid address: the wildcard is "*" alone (use a CIDR for a range of addresses)`)
	case strings.Contains(k, "/"):
		p, err = netip.ParsePrefix(k)
		if err != nil {
			return p, false, fmt.Errorf("invalid CIDR: %s", trimNetipErr(err, "ParsePrefix", k))
		}
	default:
		a, err := netip.ParseAddr(k)
		if err != nil {
			return p, false, fmt.Errorf("invalid IP address: %s", trimNetipErr(err, "ParseAddr", k))
		}
		if a.Zone() != "" {
			return p, false, fmt.Errorf("invalid IP address: zone %q not allowed", a.Zone())
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return normalisePrefix(p), false, nil
}

// trimNetipErr drops the `netip.ParseX("...")` prefix of netip's errors: the
// caller names the entry already.
func trimNetipErr(err error, fn, s string) string {
	msg := strings.TrimPrefix(err.Error(), "netip.")
	return strings.TrimPrefix(msg, fmt.Sprintf("%s(%q): ", fn, s))
}

// normalisePrefix masks host bits and unmaps IPv4-mapped prefixes of at
// least 96 bits (masking keeps the ::ffff: marker only then).
func normalisePrefix(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// parsePortSpec parses a port spec: r holds the protocols and, unless all,
// the range.
func parsePortSpec(spec string) (r PortRange, all bool, err error) {
	v := strings.TrimSpace(spec)
	r.TCP, r.UDP = true, true
	switch {
	case hasPrefixFold(v, "tcp"):
		r.UDP = false
		v = v[3:]
	case hasPrefixFold(v, "udp"):
		r.TCP = false
		v = v[3:]
	}
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return r, false, errors.New(`missing port (want a port "80", a range "80-90" or "*", optionally after "tcp " or "udp ")`)
	case v == "*":
		return r, true, nil
	case hasSuffixFold(v, "tcp") || hasSuffixFold(v, "udp"):
		return r, false, errors.New(`the protocol goes before the port, as in "udp 3333"`)
	}
	if strings.Contains(v, "-") {
		parts := strings.Split(v, "-")
		if len(parts) != 2 {
			return r, false, errors.New(`a range has exactly two ports, as in "80-90"`)
		}
		if r.Lo, err = parsePort(parts[0]); err != nil {
			return r, false, err
		}
		if r.Hi, err = parsePort(parts[1]); err != nil {
			return r, false, err
		}
		if r.Lo > r.Hi {
			return r, false, fmt.Errorf("reversed range %d-%d (the low port must come first)", r.Lo, r.Hi)
		}
		return r, false, nil
	}
	r.Lo, err = parsePort(v)
	r.Hi = r.Lo
	return r, false, err
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("port %s out of range (ports are 1-65535)", s)
		}
		return 0, fmt.Errorf("invalid port %q (want a number 1-65535)", s)
	}
	if n == 0 {
		return 0, errors.New("port 0 is not a valid port (ports are 1-65535)")
	}
	if n > 65535 {
		return 0, fmt.Errorf("port %d out of range (ports are 1-65535)", n)
	}
	return uint16(n), nil
}

// normaliseRanges returns the union of in as sorted, disjoint ranges, each
// with its protocols, leaving out the protocols all covers; adjacent ranges
// with the same protocols are merged.
func normaliseRanges(in []PortRange, all ConnTypeFilter) []PortRange {
	type edge struct {
		at       uint32
		tcp, udp int
	}
	edges := make([]edge, 0, 2*len(in))
	for _, r := range in {
		tcp, udp := r.TCP && !all.TCP, r.UDP && !all.UDP
		if r.Lo > r.Hi || (!tcp && !udp) {
			continue
		}
		e := edge{at: uint32(r.Lo)}
		if tcp {
			e.tcp = 1
		}
		if udp {
			e.udp = 1
		}
		edges = append(edges, e, edge{at: uint32(r.Hi) + 1, tcp: -e.tcp, udp: -e.udp})
	}
	if len(edges) == 0 {
		return nil
	}
	slices.SortFunc(edges, func(a, b edge) int { return cmp.Compare(a.at, b.at) })
	var out []PortRange
	tcp, udp := 0, 0
	for i := 0; i < len(edges); {
		at := edges[i].at
		for ; i < len(edges) && edges[i].at == at; i++ {
			tcp += edges[i].tcp
			udp += edges[i].udp
		}
		if i == len(edges) {
			break // at is past the last range
		}
		next := edges[i].at
		if tcp == 0 && udp == 0 {
			continue
		}
		r := PortRange{Lo: uint16(at), Hi: uint16(next - 1), TCP: tcp > 0, UDP: udp > 0}
		if n := len(out); n > 0 && uint32(out[n-1].Hi)+1 == at && out[n-1].TCP == r.TCP && out[n-1].UDP == r.UDP {
			out[n-1].Hi = r.Hi
		} else {
			out = append(out, r)
		}
	}
	return out
}

// IsBlacklistedConnection returns true if a given connection should be
// excluded by the tracer based on user defined filters: a source filter
// matches its local side (Source, SPort), a destination filter its remote
// side (Dest, DPort); either matching excludes it.
func IsBlacklistedConnection(scf []*ConnectionFilter, dcf []*ConnectionFilter, conn *ConnectionStats) bool {
	if conn == nil {
		return false
	}
	return matchSide(scf, conn.Source, conn.SPort, conn.Type) ||
		matchSide(dcf, conn.Dest, conn.DPort, conn.Type)
}

// ConnectionFilters selects the connections traced. A nil *ConnectionFilters
// traces everything.
//
// Built by ParseConfigFile, it holds an index that
// makes Traced cost a few map lookups per side whatever the number of
// filters; its lists must then not be modified. Built by hand, Traced scans
// the lists.
type ConnectionFilters struct {
	ExcludedSource      []*ConnectionFilter
	ExcludedDestination []*ConnectionFilter
	IncludedSource      []*ConnectionFilter
	IncludedDestination []*ConnectionFilter

	index *[4]*prefixIndex // ExcludedSource, ExcludedDestination, IncludedSource, IncludedDestination
}

// Filter list names, as in the config file.
const (
	ListExcludedSource      = "excluded_source_connections"
	ListExcludedDestination = "excluded_destination_connections"
	ListIncludedSource      = "included_source_connections"
	ListIncludedDestination = "included_destination_connections"
)

func newConnectionFilters(exSrc, exDst, inSrc, inDst map[string][]string) (*ConnectionFilters, []error) {
	total := countSpecs(exSrc) + countSpecs(exDst) + countSpecs(inSrc) + countSpecs(inDst)
	if err := checkFilterCount("", total); err != nil {
		return nil, []error{err}
	}
	if total == 0 {
		return nil, nil
	}
	var cf ConnectionFilters
	var errs, e []error
	cf.ExcludedSource, e = parseFilterList(ListExcludedSource, exSrc, false)
	errs = append(errs, e...)
	cf.ExcludedDestination, e = parseFilterList(ListExcludedDestination, exDst, false)
	errs = append(errs, e...)
	cf.IncludedSource, e = parseFilterList(ListIncludedSource, inSrc, true)
	errs = append(errs, e...)
	cf.IncludedDestination, e = parseFilterList(ListIncludedDestination, inDst, true)
	errs = append(errs, e...)
	if len(errs) > 0 {
		return nil, errs
	}
	if err := cf.buildIndex(); err != nil { // parsed filters have canonical masks
		return nil, []error{err}
	}
	return &cf, nil
}

func (cf *ConnectionFilters) buildIndex() error {
	var index [4]*prefixIndex
	for i, l := range [][]*ConnectionFilter{cf.ExcludedSource, cf.ExcludedDestination, cf.IncludedSource, cf.IncludedDestination} {
		entries, err := unionEntries("", l)
		if err != nil {
			return err
		}
		index[i] = newPrefixIndex(entries)
	}
	cf.index = &index
	return nil
}

// Traced reports whether c is traced: not excluded (IsBlacklistedConnection
// with the excluded lists) and, when there is any include filter, matched by
// an included-source filter on its local side or an included-destination
// filter on its remote side.
func (cf *ConnectionFilters) Traced(c *ConnectionStats) bool {
	if cf == nil || c == nil {
		return true
	}
	if ix := cf.index; ix != nil {
		if ix[0].match(c.Source, c.SPort, c.Type) || ix[1].match(c.Dest, c.DPort, c.Type) {
			return false
		}
		if ix[2] == nil && ix[3] == nil {
			return true
		}
		return ix[2].match(c.Source, c.SPort, c.Type) || ix[3].match(c.Dest, c.DPort, c.Type)
	}
	if IsBlacklistedConnection(cf.ExcludedSource, cf.ExcludedDestination, c) {
		return false
	}
	if len(cf.IncludedSource) == 0 && len(cf.IncludedDestination) == 0 {
		return true
	}
	return matchSide(cf.IncludedSource, c.Source, c.SPort, c.Type) ||
		matchSide(cf.IncludedDestination, c.Dest, c.DPort, c.Type)
}

// KernelFilterEntry is one entry of a longest-prefix-match table: the port
// specs that apply to the addresses whose longest matching prefix in the
// table is Prefix. Prefix is IPv4 (4 bytes) or IPv6 (16 bytes).
type KernelFilterEntry struct {
	Prefix         netip.Prefix
	AllTCP, AllUDP bool
	// Ranges are sorted, disjoint, at most MaxKernelRanges, and leave out
	// the protocols AllTCP and AllUDP cover.
	Ranges []PortRange
}

// Matches reports whether port and protocol t match e's port specs.
func (e KernelFilterEntry) Matches(port uint16, t ConnectionType) bool {
	return protoIn(e.AllTCP, e.AllUDP, t) || rangesMatch(e.Ranges, port, t)
}

// KernelFilterTables holds one longest-prefix-match table per filter list.
type KernelFilterTables struct {
	ExcludedSource      []KernelFilterEntry
	ExcludedDestination []KernelFilterEntry
	IncludedSource      []KernelFilterEntry
	IncludedDestination []KernelFilterEntry
}

// KernelTables turns the filters into longest-prefix-match tables: for each
// list, one entry per distinct prefix ("*" gives 0.0.0.0/0 and ::/0), whose
// port specs are the union of the specs of every filter of the list whose
// prefix contains the entry's. So the entry found by a longest-prefix lookup
// of an address matches a port exactly when some filter matching the
// address matches it. An entry needing more than MaxKernelRanges ranges is
// an error naming the prefix: the caller then filters in user space only. A
// nil receiver gives nil tables.
func (cf *ConnectionFilters) KernelTables() (*KernelFilterTables, error) {
	if cf == nil {
		return nil, nil
	}
	var t KernelFilterTables
	var errs []error
	var err error
	if t.ExcludedSource, err = kernelTable(ListExcludedSource, cf.ExcludedSource); err != nil {
		errs = append(errs, err)
	}
	if t.ExcludedDestination, err = kernelTable(ListExcludedDestination, cf.ExcludedDestination); err != nil {
		errs = append(errs, err)
	}
	if t.IncludedSource, err = kernelTable(ListIncludedSource, cf.IncludedSource); err != nil {
		errs = append(errs, err)
	}
	if t.IncludedDestination, err = kernelTable(ListIncludedDestination, cf.IncludedDestination); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &t, nil
}

type kernelAcc struct {
	all    ConnTypeFilter
	ranges []PortRange
}

func (a *kernelAcc) add(o *kernelAcc) {
	a.all.TCP = a.all.TCP || o.all.TCP
	a.all.UDP = a.all.UDP || o.all.UDP
	a.ranges = append(a.ranges, o.ranges...)
}

func kernelTable(list string, filters []*ConnectionFilter) ([]KernelFilterEntry, error) {
	entries, err := unionEntries(list, filters)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, e := range entries {
		if len(e.Ranges) > MaxKernelRanges {
			errs = append(errs, fmt.Errorf("%s: prefix %s needs %d port ranges in the kernel, more than %d", list, e.Prefix, len(e.Ranges), MaxKernelRanges))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return entries, nil
}

// unionEntries returns, sorted by prefix, one entry per distinct prefix of
// filters with the union of the port specs of every filter containing it.
func unionEntries(list string, filters []*ConnectionFilter) ([]KernelFilterEntry, error) {
	if len(filters) == 0 {
		return nil, nil
	}
	own := make(map[netip.Prefix]*kernelAcc)
	for _, f := range filters {
		p, wild, ok := f.prefix()
		if !ok {
			return nil, fmt.Errorf("%s[%q]: address %s has a non-contiguous mask", list, f.Key, f.IP)
		}
		ps := []netip.Prefix{p}
		if wild {
			ps = []netip.Prefix{netip.PrefixFrom(netip.IPv4Unspecified(), 0), netip.PrefixFrom(netip.IPv6Unspecified(), 0)}
		}
		acc := &kernelAcc{all: f.AllPorts, ranges: slices.Clone(f.Ranges)}
		for port, c := range f.Ports {
			acc.ranges = append(acc.ranges, PortRange{Lo: port, Hi: port, TCP: c.TCP, UDP: c.UDP})
		}
		for _, p := range ps {
			if a := own[p]; a != nil {
				a.add(acc)
			} else {
				c := *acc
				c.ranges = slices.Clone(acc.ranges)
				own[p] = &c
			}
		}
	}
	prefixes := make([]netip.Prefix, 0, len(own))
	for p := range own {
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, netip.Prefix.Compare)
	out := make([]KernelFilterEntry, 0, len(prefixes))
	for _, p := range prefixes {
		var u kernelAcc
		u.add(own[p])
		// Every prefix containing p is p's address masked to fewer bits.
		for b := p.Bits() - 1; b >= 0; b-- {
			q, _ := p.Addr().Prefix(b)
			if a := own[q]; a != nil {
				u.add(a)
			}
		}
		out = append(out, KernelFilterEntry{Prefix: p, AllTCP: u.all.TCP, AllUDP: u.all.UDP, Ranges: normaliseRanges(u.ranges, u.all)})
	}
	return out, nil
}

// prefixIndex is a longest-prefix-match index over union entries: one map
// lookup per distinct prefix length of the address's family, longest first.
type prefixIndex struct {
	lens4, lens6 []int
	entries      map[netip.Prefix]*KernelFilterEntry
}

func newPrefixIndex(entries []KernelFilterEntry) *prefixIndex {
	if len(entries) == 0 {
		return nil
	}
	ix := &prefixIndex{entries: make(map[netip.Prefix]*KernelFilterEntry, len(entries))}
	for i := range entries {
		e := &entries[i]
		ix.entries[e.Prefix] = e
		if e.Prefix.Addr().Is4() {
			ix.lens4 = append(ix.lens4, e.Prefix.Bits())
		} else {
			ix.lens6 = append(ix.lens6, e.Prefix.Bits())
		}
	}
	desc := func(a, b int) int { return b - a }
	slices.SortFunc(ix.lens4, desc)
	slices.SortFunc(ix.lens6, desc)
	ix.lens4 = slices.Compact(ix.lens4)
	ix.lens6 = slices.Compact(ix.lens6)
	return ix
}

func (ix *prefixIndex) match(a netip.Addr, port uint16, t ConnectionType) bool {
	if ix == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	lens := ix.lens6
	if a.Is4() {
		lens = ix.lens4
	}
	for _, l := range lens {
		p, _ := a.Prefix(l)
		if e := ix.entries[p]; e != nil {
			return e.Matches(port, t)
		}
	}
	return false
}

// LookupKernelEntry returns the entry of table with the longest prefix
// containing a (unmapped), as the kernel's LPM trie lookup would.
func LookupKernelEntry(table []KernelFilterEntry, a netip.Addr) (KernelFilterEntry, bool) {
	if !a.IsValid() {
		return KernelFilterEntry{}, false
	}
	a = a.Unmap().WithZone("")
	best := -1
	for i, e := range table {
		if e.Prefix.Contains(a) && (best < 0 || e.Prefix.Bits() > table[best].Prefix.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return KernelFilterEntry{}, false
	}
	return table[best], true
}

func kernelMatch(table []KernelFilterEntry, a netip.Addr, port uint16, t ConnectionType) bool {
	e, ok := LookupKernelEntry(table, a)
	return ok && e.Matches(port, t)
}

// Traced is the reference of what the kernel computes from the tables (with
// linear lookups): the same decision as ConnectionFilters.Traced. Nil tables
// trace everything.
func (t *KernelFilterTables) Traced(c *ConnectionStats) bool {
	if t == nil || c == nil {
		return true
	}
	if kernelMatch(t.ExcludedSource, c.Source, c.SPort, c.Type) ||
		kernelMatch(t.ExcludedDestination, c.Dest, c.DPort, c.Type) {
		return false
	}
	if len(t.IncludedSource) == 0 && len(t.IncludedDestination) == 0 {
		return true
	}
	return kernelMatch(t.IncludedSource, c.Source, c.SPort, c.Type) ||
		kernelMatch(t.IncludedDestination, c.Dest, c.DPort, c.Type)
}
