package filter

import (
	"net"
	"net/netip"
	"slices"
	"sort"
)

// matches reports whether port and protocol t are in r.
func (r PortRange) matches(port uint16, t Proto) bool {
	return r.Lo <= port && port <= r.Hi && protoIn(r.TCP, r.UDP, t)
}

func protoIn(tcp, udp bool, t Proto) bool {
	return (tcp && t == TCP) || (udp && t == UDP)
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

func (f *ConnectionFilter) matchesPort(port uint16, t Proto) bool {
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
func rangesMatch(rs []PortRange, port uint16, t Proto) bool {
	if len(rs) <= 8 {
		for _, r := range rs {
			if r.matches(port, t) {
				return true
			}
		}
		return false
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Hi >= port })
	return i < len(rs) && rs[i].matches(port, t)
}

// matchSide reports whether one of filters matches address a, port and t.
// An invalid address matches nothing (as the seed's nil address).
func matchSide(filters []*ConnectionFilter, a netip.Addr, port uint16, t Proto) bool {
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

// isBlacklistedConnection returns true if a given connection should be
// excluded by the tracer based on user defined filters: a source filter
// matches its local side, a destination filter its remote side; either
// matching excludes it.
func isBlacklistedConnection(scf []*ConnectionFilter, dcf []*ConnectionFilter, c Conn) bool {
	return matchSide(scf, c.Local.Addr(), c.Local.Port(), c.Proto) ||
		matchSide(dcf, c.Remote.Addr(), c.Remote.Port(), c.Proto)
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

// Traced reports whether c is traced: not excluded (an excluded-source
// filter matching its local side or an excluded-destination filter its
// remote side) and, when there is any include filter, matched by
// an included-source filter on its local side or an included-destination
// filter on its remote side.
func (cf *ConnectionFilters) Traced(c Conn) bool {
	if cf == nil {
		return true
	}
	la, lp, ra, rp := c.Local.Addr(), c.Local.Port(), c.Remote.Addr(), c.Remote.Port()
	if ix := cf.index; ix != nil {
		if ix[0].match(la, lp, c.Proto) || ix[1].match(ra, rp, c.Proto) {
			return false
		}
		if ix[2] == nil && ix[3] == nil {
			return true
		}
		return ix[2].match(la, lp, c.Proto) || ix[3].match(ra, rp, c.Proto)
	}
	if isBlacklistedConnection(cf.ExcludedSource, cf.ExcludedDestination, c) {
		return false
	}
	if len(cf.IncludedSource) == 0 && len(cf.IncludedDestination) == 0 {
		return true
	}
	return matchSide(cf.IncludedSource, la, lp, c.Proto) ||
		matchSide(cf.IncludedDestination, ra, rp, c.Proto)
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
	ix.lens4, ix.lens6 = longestFirst(ix.lens4), longestFirst(ix.lens6)
	return ix
}

// longestFirst sorts prefix lengths longest first, without repeats: the
// order in which a lookup tries them (the most specific prefix wins).
func longestFirst(lens []int) []int {
	slices.SortFunc(lens, func(a, b int) int { return b - a })
	return slices.Compact(lens)
}

func (ix *prefixIndex) match(a netip.Addr, port uint16, t Proto) bool {
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
			return e.matches(port, t)
		}
	}
	return false
}
