package filter

import (
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// groupIndex finds the most specific group with one map lookup per distinct
// prefix length of the address's family, longest first.
type groupIndex struct {
	v4Lens, v6Lens []int
	set            map[netip.Prefix]struct{}
}

func newGroupIndex(ps []netip.Prefix) *groupIndex {
	g := &groupIndex{set: make(map[netip.Prefix]struct{}, len(ps))}
	for _, p := range ps {
		g.set[p] = struct{}{}
		if p.Addr().Is4() {
			g.v4Lens = append(g.v4Lens, p.Bits())
		} else {
			g.v6Lens = append(g.v6Lens, p.Bits())
		}
	}
	g.v4Lens, g.v6Lens = longestFirst(g.v4Lens), longestFirst(g.v6Lens)
	return g
}

// Group returns the most specific address group containing addr (IPv4-mapped
// addresses are unmapped first), and false when there is none. It is safe
// for concurrent use.
func (fc *FileConfig) Group(addr netip.Addr) (netip.Prefix, bool) {
	if fc == nil || len(fc.AddressGroups) == 0 || !addr.IsValid() {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap().WithZone("")
	if fc.groups == nil { // built by hand: linear scan
		best := netip.Prefix{}
		for _, p := range fc.AddressGroups {
			if p.Contains(addr) && (!best.IsValid() || p.Bits() > best.Bits()) {
				best = p
			}
		}
		return best, best.IsValid()
	}
	lens := fc.groups.v6Lens
	if addr.Is4() {
		lens = fc.groups.v4Lens
	}
	for _, l := range lens {
		p, _ := addr.Prefix(l)
		if _, ok := fc.groups.set[p]; ok {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// addressGroups decodes and checks the address_groups list.
func (p *configParser) addressGroups(n *yaml.Node) []netip.Prefix {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(`%s: line %d: want a list of CIDRs (e.g. ["10.0.0.0/8"]), got %s`, keyAddressGroups, n.Line, describe(n))
		return nil
	}
	if len(n.Content) > maxAddressGroups {
		p.errorf("%s: %d groups, more than the limit of %d", keyAddressGroups, len(n.Content), maxAddressGroups)
		return nil
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]int{}
	for i, e := range n.Content {
		e = resolve(e)
		if e == nil || e.Kind != yaml.ScalarNode || isNull(e) {
			p.errorf("%s[%d]: line %d: want a CIDR, got %s", keyAddressGroups, i, n.Content[i].Line, describe(e))
			continue
		}
		s := strings.TrimSpace(e.Value)
		if !strings.Contains(s, "/") {
			hint := ""
			if a, err := netip.ParseAddr(s); err == nil {
				hint = fmt.Sprintf(" (e.g. %s)", netip.PrefixFrom(a, a.BitLen()))
			}
			p.errorf("%s[%d] %q: invalid CIDR: no prefix length%s (line %d)", keyAddressGroups, i, e.Value, hint, e.Line)
			continue
		}
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			p.errorf("%s[%d] %q: invalid CIDR: %s (line %d)", keyAddressGroups, i, e.Value, trimNetipErr(err, "ParsePrefix", s), e.Line)
			continue
		}
		if m := pfx.Masked(); m != pfx {
			p.errorf("%s[%d] %q: host bits set: did you mean %s? (line %d)", keyAddressGroups, i, e.Value, m, e.Line)
			continue
		}
		pfx = normalisePrefix(pfx)
		if first, dup := seen[pfx]; dup {
			p.errorf("%s[%d] %q: duplicate group: same as %s[%d] (%s) (line %d)", keyAddressGroups, i, e.Value, keyAddressGroups, first, pfx, e.Line)
			continue
		}
		seen[pfx] = i
		out = append(out, pfx)
	}
	return out
}
