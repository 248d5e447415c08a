package filter

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// MaxKernelRanges is the most port ranges one KernelFilterEntry may have
// (the size of the array in the kernel's map value).
const MaxKernelRanges = 16

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

// matches reports whether port and protocol t match e's port specs.
func (e KernelFilterEntry) matches(port uint16, t Proto) bool {
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
	if t.ExcludedSource, err = kernelTable(listExcludedSource, cf.ExcludedSource); err != nil {
		errs = append(errs, err)
	}
	if t.ExcludedDestination, err = kernelTable(listExcludedDestination, cf.ExcludedDestination); err != nil {
		errs = append(errs, err)
	}
	if t.IncludedSource, err = kernelTable(listIncludedSource, cf.IncludedSource); err != nil {
		errs = append(errs, err)
	}
	if t.IncludedDestination, err = kernelTable(listIncludedDestination, cf.IncludedDestination); err != nil {
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

// lookupKernelEntry returns the entry of table with the longest prefix
// containing a (unmapped), as the kernel's LPM trie lookup would.
func lookupKernelEntry(table []KernelFilterEntry, a netip.Addr) (KernelFilterEntry, bool) {
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

func kernelMatch(table []KernelFilterEntry, a netip.Addr, port uint16, t Proto) bool {
	e, ok := lookupKernelEntry(table, a)
	return ok && e.matches(port, t)
}

// traced is the reference of what the kernel computes from the tables (with
// linear lookups): the same decision as ConnectionFilters.Traced. Nil tables
// trace everything.
func (t *KernelFilterTables) traced(c Conn) bool {
	if t == nil {
		return true
	}
	la, lp, ra, rp := c.Local.Addr(), c.Local.Port(), c.Remote.Addr(), c.Remote.Port()
	if kernelMatch(t.ExcludedSource, la, lp, c.Proto) ||
		kernelMatch(t.ExcludedDestination, ra, rp, c.Proto) {
		return false
	}
	if len(t.IncludedSource) == 0 && len(t.IncludedDestination) == 0 {
		return true
	}
	return kernelMatch(t.IncludedSource, la, lp, c.Proto) ||
		kernelMatch(t.IncludedDestination, ra, rp, c.Proto)
}
