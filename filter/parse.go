package filter

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

// maxFilterEntries bounds the port specs (an address key with n port specs
// counts n) of one parseConnectionFilters call, and of all four lists of a
// ConnectionFilters together.
const maxFilterEntries = 10000

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

// ConnectionFilter holds one address spec and its port specs.
type ConnectionFilter struct {
	// IP is the address spec as the seed held it; nil is the wildcard "*".
	IP *net.IPNet
	// AllPorts holds the protocols of a "*" port spec.
	AllPorts ConnTypeFilter
	// Ports is the seed's per-port map. The parser leaves it nil
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

// filterError is one bad filter entry.
type filterError struct {
	// List is the filter list (the config file key); empty when not known.
	List string
	// Key is the address spec as written.
	Key string
	// Spec is the offending port spec, when HasSpec.
	Spec    string
	HasSpec bool
	Err     error
}

func (e *filterError) Error() string {
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

func (e *filterError) Unwrap() error { return e.Err }

// parseConnectionFilters parses exclusion filters (the seed's format). Every
// bad entry is reported, in the returned error (see the package comment for
// the differences from the seed); on error the filters are nil.
func parseConnectionFilters(filters map[string][]string) ([]*ConnectionFilter, error) {
	return parseFilterListErr("", filters, false)
}

// parseIncludedConnectionFilters parses include filters: the same format,
// except that "*" with "*" is allowed (it includes every connection).
func parseIncludedConnectionFilters(filters map[string][]string) ([]*ConnectionFilter, error) {
	return parseFilterListErr("", filters, true)
}

func parseFilterListErr(list string, filters map[string][]string, include bool) ([]*ConnectionFilter, error) {
	if err := checkFilterCount(list, countSpecs(filters)); err != nil {
		return nil, err
	}
	fs, errs := parseFilterList(list, filters, include)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return fs, nil
}

func countSpecs(filters map[string][]string) int {
	n := 0
	for _, v := range filters {
		n += max(len(v), 1)
	}
	return n
}

func checkFilterCount(what string, n int) error {
	if n > maxFilterEntries {
		if what == "" {
			what = "connection filters"
		}
		return fmt.Errorf("%s: %d port specs, more than the limit of %d", what, n, maxFilterEntries)
	}
	return nil
}

// parseFilterList parses one list; errs holds *filterError values, ordered
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
		bad := func(err error) { errs = append(errs, &filterError{List: list, Key: key, Err: err}) }
		badSpec := func(spec string, err error) {
			errs = append(errs, &filterError{List: list, Key: key, Spec: spec, HasSpec: true, Err: err})
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

// ConnectionFilters selects the connections traced. A nil *ConnectionFilters
// traces everything.
//
// Built by NewConnectionFilters (or ParseConfigFile), it holds an index that
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
	listExcludedSource      = "excluded_source_connections"
	listExcludedDestination = "excluded_destination_connections"
	listIncludedSource      = "included_source_connections"
	listIncludedDestination = "included_destination_connections"
)

// NewConnectionFilters parses the four lists; errors name the list, the key
// and the port spec. It returns nil (trace everything) when all are empty.
func NewConnectionFilters(excludedSource, excludedDestination, includedSource, includedDestination map[string][]string) (*ConnectionFilters, error) {
	cf, errs := newConnectionFilters(excludedSource, excludedDestination, includedSource, includedDestination)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cf, nil
}

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
	cf.ExcludedSource, e = parseFilterList(listExcludedSource, exSrc, false)
	errs = append(errs, e...)
	cf.ExcludedDestination, e = parseFilterList(listExcludedDestination, exDst, false)
	errs = append(errs, e...)
	cf.IncludedSource, e = parseFilterList(listIncludedSource, inSrc, true)
	errs = append(errs, e...)
	cf.IncludedDestination, e = parseFilterList(listIncludedDestination, inDst, true)
	errs = append(errs, e...)
	if len(errs) > 0 {
		return nil, errs
	}
	if err := cf.buildIndex(); err != nil { // parsed filters have canonical masks
		return nil, []error{err}
	}
	return &cf, nil
}
