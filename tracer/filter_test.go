package tracer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// The seed's test filters (datadog.md §2), less the entries the seed skipped
// as invalid: those are errors now (TestParseConnectionFiltersSeedInvalid).
var (
	seedSourceFilters = map[string][]string{
		"172.0.0.1":     {"80", "10", "443"},
		"*":             {"9000"}, // only port 9000
		"::7f00:35:0:0": {"443"},  // ipv6
		"10.0.0.10":     {"3333", "*"},
		"172.0.0.2":     {"80", "10", "443", "53361-53370", "100-100"},
		"10.0.0.11":     {"3333", "*", "53361-53370"},
		"10.0.0.1":      {"tcp *", "53361-53370"},
		"10.0.0.2":      {"tcp 53361-53500", "udp 119", "udp 53361"},
		"1.1.1.1":       {"udp *", "tcp 11211"},
	}
	seedDestinationFilters = map[string][]string{
		"10.0.0.0/24":      {"8080", "8081", "10255"},
		"2001:db8::2:1":    {"5001"},
		"2001:db8::2:1/55": {"80"},
		"10.0.0.4":         {"udp *", "*"},
	}
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func src(addr string, port uint16, t ConnectionType) *ConnectionStats {
	return &ConnectionStats{Source: mustAddr(addr), SPort: port, Type: t}
}

func dst(addr string, port uint16, t ConnectionType) *ConnectionStats {
	return &ConnectionStats{Dest: mustAddr(addr), DPort: port, Type: t}
}

func mustParse(t testing.TB, m map[string][]string) []*ConnectionFilter {
	t.Helper()
	fs, err := ParseConnectionFilters(m)
	if err != nil {
		t.Fatalf("ParseConnectionFilters(%v): %v", m, err)
	}
	return fs
}

func TestParseConnectionFiltersSeed(t *testing.T) {
	sl := mustParse(t, seedSourceFilters)
	dl := mustParse(t, seedDestinationFilters)
	if len(sl) != len(seedSourceFilters) || len(dl) != len(seedDestinationFilters) {
		t.Fatalf("got %d source and %d destination filters, want %d and %d", len(sl), len(dl), len(seedSourceFilters), len(seedDestinationFilters))
	}
	for _, tc := range []struct {
		name string
		c    *ConnectionStats
		want bool
	}{
		// The seed's source cases.
		{"port list", src("172.0.0.1", 10, TCP), true},
		{"wildcard address, port 9000", src("10.0.1.24", 9000, TCP), true},
		{"wildcard address, port 9000, ipv6", src("2001:db8::99", 9000, UDP), true},
		{"wildcard address, other port", src("10.0.1.24", 9001, TCP), false},
		{"ipv6", src("::7f00:35:0:0", 443, TCP), true},
		{"port wildcard", src("10.0.0.10", 6666, TCP), true},
		{"port wildcard 2", src("10.0.0.10", 33, TCP), true},
		{"single-port range", src("172.0.0.2", 100, TCP), true},
		{"range", src("172.0.0.2", 53365, UDP), true},
		{"past range", src("172.0.0.2", 53371, UDP), false},
		{"port wildcard with range", src("10.0.0.11", 6666, TCP), true},
		{"tcp wildcard", src("10.0.0.1", 100, TCP), true},
		{"tcp wildcard, udp", src("10.0.0.1", 100, UDP), false},
		{"tcp wildcard, udp in range", src("10.0.0.1", 53365, UDP), true},
		{"tcp range, udp", src("10.0.0.2", 53363, UDP), false},
		{"tcp range, tcp", src("10.0.0.2", 53363, TCP), true},
		{"tcp range and udp port, tcp", src("10.0.0.2", 53361, TCP), true},
		{"tcp range and udp port, udp", src("10.0.0.2", 53361, UDP), true},
		{"udp port", src("10.0.0.2", 119, UDP), true},
		{"udp port, tcp", src("10.0.0.2", 119, TCP), false},
		{"udp wildcard", src("1.1.1.1", 5353, UDP), true},
		{"udp wildcard, tcp", src("1.1.1.1", 5353, TCP), false},
		{"udp wildcard, tcp port", src("1.1.1.1", 11211, TCP), true},
		{"unknown address", src("172.0.0.3", 80, TCP), false},
		// The seed's destination cases.
		{"dest CIDR", dst("10.0.0.5", 8080, TCP), true},
		{"dest CIDR, other port", dst("10.0.0.5", 80, TCP), false},
		{"dest ipv6", dst("2001:db8::2:1", 5001, TCP), true},
		{"dest ipv6 CIDR", dst("2001:db8::5:1", 80, TCP), true},
		{"dest ipv6 CIDR, outside", dst("2001:db8:0:200::1", 80, TCP), false},
		{"dest port wildcard", dst("10.0.0.4", 1234, TCP), true},
		{"dest port wildcard udp", dst("10.0.0.4", 1234, UDP), true},
		// A source filter never matches the remote side, nor the reverse.
		{"source filter, remote side", dst("172.0.0.1", 10, TCP), false},
		{"dest filter, local side", src("10.0.0.5", 8080, TCP), false},
		{"no address", &ConnectionStats{SPort: 9000, DPort: 9000}, false},
	} {
		if got := IsBlacklistedConnection(sl, dl, tc.c); got != tc.want {
			t.Errorf("%s: IsBlacklistedConnection(%s:%d -> %s:%d %s) = %v, want %v",
				tc.name, tc.c.Source, tc.c.SPort, tc.c.Dest, tc.c.DPort, tc.c.Type, got, tc.want)
		}
	}
	if IsBlacklistedConnection(nil, nil, src("1.1.1.1", 1, UDP)) {
		t.Error("no filters: excluded")
	}
}

// Difference 1: the entries the seed skipped with a log line are errors
// naming the key and the port spec.
func TestParseConnectionFiltersSeedInvalid(t *testing.T) {
	for _, tc := range []struct {
		key   string
		ports []string
		want  string
	}{
		{"10.0.0.25", []string{"30", "ABCD"}, `connection filter["10.0.0.25"]: port spec "ABCD": invalid port "ABCD"`},
		{"123.ABCD", []string{"*"}, `connection filter["123.ABCD"]: invalid IP address`},
		{"::7f00:35:0:1", []string{"65536"}, `["::7f00:35:0:1"]: port spec "65536": port 65536 out of range`},
		{"10.0.0.26", []string{"30", "53361-53360"}, `["10.0.0.26"]: port spec "53361-53360": reversed range 53361-53360`},
		{"", []string{"1234"}, `[""]: empty address`},
		{"*", []string{"*"}, `["*"]: address "*" with port "*" (every port of both protocols) excludes every connection`},
		{"*", []string{"tcp *", "UDP *"}, `excludes every connection`},
		{"2001:db8::2:2", []string{"3333 udp"}, `["2001:db8::2:2"]: port spec "3333 udp": the protocol goes before the port`},
		{"10.0.0.3/24", []string{"30-ABC"}, `["10.0.0.3/24"]: port spec "30-ABC": invalid port "ABC"`},
		{"2001:db8::2:2/55", []string{"8080-8082-8085"}, `port spec "8080-8082-8085": a range has exactly two ports`},
		{"10.0.0.5", []string{"0-1"}, `["10.0.0.5"]: port spec "0-1": port 0 is not a valid port`},
		{"10.0.0.5", []string{"0"}, `port spec "0": port 0 is not a valid port`},
		{"10.0.0.5", []string{"70000"}, `port spec "70000": port 70000 out of range`},
		{"10.0.0.5", []string{"99999999999999999999999"}, `out of range`},
		{"10.0.0.5", []string{"tcp"}, `port spec "tcp": missing port`},
		{"10.0.0.5", []string{""}, `port spec "": missing port`},
		{"10.0.0.5", []string{"3333UDP"}, `the protocol goes before the port`},
		{"10.0.0.5", []string{"-80"}, `invalid port ""`},
		{"10.0.0.5", nil, `["10.0.0.5"]: empty port list`},
		{"10.0.0.0/33", []string{"80"}, `["10.0.0.0/33"]: invalid CIDR: prefix length out of range`},
		{"10.0.*", []string{"80"}, `the wildcard is "*" alone`},
		{"fe80::1%eth0", []string{"80"}, `zone "eth0" not allowed`},
		{"2001:db8::1/64%eth0", []string{"80"}, `invalid CIDR`},
		{"1.2.3", []string{"80"}, `["1.2.3"]: invalid IP address`},
	} {
		fs, err := ParseConnectionFilters(map[string][]string{tc.key: tc.ports})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %q: got error %v, want it to contain %q", tc.key, tc.ports, err, tc.want)
		}
		if fs != nil {
			t.Errorf("%q: %q: got filters with the error", tc.key, tc.ports)
		}
	}
}

// Difference 1: every bad entry is reported, keys sorted, the same every time.
func TestParseConnectionFiltersAllErrorsSorted(t *testing.T) {
	m := map[string][]string{
		"10.0.0.9": {"80", "0", "x"},
		"10.0.0.1": {"70000"},
		"zz":       {"80"},
		"10.0.0.5": {"80"}, // fine
		"":         {},
	}
	want := strings.Join([]string{
		`connection filter[""]: empty address (want "*", an IP address or a CIDR)`,
		`connection filter[""]: empty port list (want at least one port spec, e.g. "*")`,
		`connection filter["10.0.0.1"]: port spec "70000": port 70000 out of range (ports are 1-65535)`,
		`connection filter["10.0.0.9"]: port spec "0": port 0 is not a valid port (ports are 1-65535)`,
		`connection filter["10.0.0.9"]: port spec "x": invalid port "x" (want a number 1-65535)`,
		`connection filter["zz"]: invalid IP address: unable to parse IP`,
	}, "\n")
	for range 20 {
		_, err := ParseConnectionFilters(m)
		if err == nil || err.Error() != want {
			t.Fatalf("got\n%v\nwant\n%s", err, want)
		}
	}
	// Each error is a *FilterError, for callers that format their own.
	_, err := ParseConnectionFilters(map[string][]string{"10.0.0.1": {"0"}})
	var fe *FilterError
	if !errors.As(err, &fe) || fe.Key != "10.0.0.1" || fe.Spec != "0" || !fe.HasSpec || errors.Unwrap(fe) == nil {
		t.Errorf("got %#v", fe)
	}
}

// Difference 2: an IPv6 address is a /128 (the seed: /64), and a fully
// expanded one is accepted (the seed rejected it).
func TestFilterIPv6HostIs128(t *testing.T) {
	dl := mustParse(t, map[string][]string{
		"2001:db8::2:1":         {"5001"},
		"2001:db8:0:0:0:0:3:1":  {"5001"},
		"2001:0db8:0:0:0:0:4:1": {"tcp 5002"},
	})
	for _, tc := range []struct {
		addr string
		port uint16
		want bool
	}{
		{"2001:db8::2:1", 5001, true},
		{"2001:db8::2:2", 5001, false}, // same /64: the seed excluded it
		{"2001:db8::ffff:0:0:1", 5001, false},
		{"2001:db8::3:1", 5001, true},
		{"2001:db8::3:2", 5001, false},
		{"2001:db8::4:1", 5002, true},
	} {
		if got := IsBlacklistedConnection(nil, dl, dst(tc.addr, tc.port, TCP)); got != tc.want {
			t.Errorf("%s:%d: got %v, want %v", tc.addr, tc.port, got, tc.want)
		}
	}
	i := slices.IndexFunc(dl, func(f *ConnectionFilter) bool { return f.Key == "2001:db8::2:1" })
	if p := dl[i].Prefix; p != netip.MustParsePrefix("2001:db8::2:1/128") {
		t.Errorf("prefix %s, want 2001:db8::2:1/128", p)
	}
	if ones, bits := dl[i].IP.Mask.Size(); ones != 128 || bits != 128 {
		t.Errorf("IP mask /%d of %d, want /128", ones, bits)
	}
}

// Difference 3: IPv4-mapped addresses in filters are unmapped.
func TestFilterIPv4MappedUnmapped(t *testing.T) {
	dl := mustParse(t, map[string][]string{
		"::ffff:10.0.0.1":      {"80"},
		"::ffff:192.0.0.0/104": {"443"}, // 192.0.0.0/8
		"::/0":                 {"22"},  // IPv6 only
	})
	byKey := map[string]*ConnectionFilter{}
	for _, f := range dl {
		byKey[f.Key] = f
	}
	if p := byKey["::ffff:10.0.0.1"].Prefix; p != netip.MustParsePrefix("10.0.0.1/32") {
		t.Errorf("::ffff:10.0.0.1 is %s, want 10.0.0.1/32", p)
	}
	if p := byKey["::ffff:192.0.0.0/104"].Prefix; p != netip.MustParsePrefix("192.0.0.0/8") {
		t.Errorf("::ffff:192.0.0.0/104 is %s, want 192.0.0.0/8", p)
	}
	if ip := byKey["::ffff:10.0.0.1"].IP; len(ip.IP) != 4 || ip.String() != "10.0.0.1/32" {
		t.Errorf("IP %v (%d bytes), want 10.0.0.1/32 in 4 bytes", ip, len(ip.IP))
	}
	for _, tc := range []struct {
		addr string
		port uint16
		want bool
	}{
		{"10.0.0.1", 80, true},
		{"::ffff:10.0.0.1", 80, true}, // a mapped connection address too
		{"10.0.0.2", 80, false},
		{"::1", 80, false}, // the seed's "::ffff:10.0.0.1/32" was ::/32, matching ::1
		{"192.168.1.1", 443, true},
		{"193.168.1.1", 443, false},
		{"10.0.0.1", 22, false}, // ::/0 does not hold IPv4 connections
		{"2001:db8::1", 22, true},
	} {
		if got := IsBlacklistedConnection(nil, dl, dst(tc.addr, tc.port, TCP)); got != tc.want {
			t.Errorf("%s:%d: got %v, want %v", tc.addr, tc.port, got, tc.want)
		}
	}
	// Mapped and plain spellings of one prefix are duplicates.
	_, err := ParseConnectionFilters(map[string][]string{"10.0.0.1": {"80"}, "::ffff:10.0.0.1": {"81"}})
	if err == nil || !strings.Contains(err.Error(), `connection filter["::ffff:10.0.0.1"]: same address as ["10.0.0.1"] (both are 10.0.0.1/32)`) {
		t.Errorf("mapped duplicate: %v", err)
	}
}

// Difference 4: the wildcard is "*" alone.
func TestFilterWildcardOnlyStar(t *testing.T) {
	for _, k := range []string{"10.0.*", "*.*.*.*", "**", "* /0"} {
		if _, err := ParseConnectionFilters(map[string][]string{k: {"80"}}); err == nil {
			t.Errorf("%q: accepted", k)
		}
	}
	fs := mustParse(t, map[string][]string{" * ": {"80"}})
	if fs[0].IP != nil || fs[0].Prefix.IsValid() {
		t.Errorf(`" * " is not the wildcard: %v %v`, fs[0].IP, fs[0].Prefix)
	}
}

// Difference 5: keys normalising to the same prefix are an error.
func TestFilterDuplicateNormalisedKeys(t *testing.T) {
	for _, tc := range []struct {
		a, b, want string
	}{
		{"10.0.0.1", "10.0.0.1/32", `connection filter["10.0.0.1/32"]: same address as ["10.0.0.1"] (both are 10.0.0.1/32)`},
		{"10.0.0.0/24", "10.0.0.3/24", `["10.0.0.3/24"]: same address as ["10.0.0.0/24"] (both are 10.0.0.0/24)`},
		{"2001:db8::1", "2001:db8:0:0:0:0:0:1", `same address as`},
		{"*", " *", `["*"]: same address as [" *"] (both are *)`}, // " *" sorts first
	} {
		_, err := ParseConnectionFilters(map[string][]string{tc.a: {"80"}, tc.b: {"81"}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q and %q: got %v, want %q", tc.a, tc.b, err, tc.want)
		}
	}
	// Different lists may repeat a key.
	if _, err := NewConnectionFilters(map[string][]string{"10.0.0.1": {"80"}}, map[string][]string{"10.0.0.1": {"80"}}, nil, nil); err != nil {
		t.Error(err)
	}
}

// Difference 6: source and destination filters are both checked (the seed
// skipped the destination filters when there were source filters).
func TestFilterBothSidesChecked(t *testing.T) {
	sl := mustParse(t, map[string][]string{"10.0.0.1": {"22"}})
	dl := mustParse(t, map[string][]string{"10.0.0.2": {"80"}})
	c := &ConnectionStats{Source: mustAddr("10.0.0.1"), SPort: 40000, Dest: mustAddr("10.0.0.2"), DPort: 80, Type: TCP}
	if !IsBlacklistedConnection(sl, dl, c) {
		t.Error("destination match not excluded when source filters exist")
	}
	c.DPort = 81
	if IsBlacklistedConnection(sl, dl, c) {
		t.Error("no match, but excluded")
	}
	c.SPort = 22
	if !IsBlacklistedConnection(sl, dl, c) {
		t.Error("source match not excluded")
	}
}

// Difference 8: ranges are kept as sorted, disjoint ranges; Ports stays nil.
func TestFilterRangesUnexpanded(t *testing.T) {
	fs := mustParse(t, map[string][]string{
		"10.0.0.1": {"1-65535"},
		"10.0.0.2": {"81-90", "80", "tcp 91", "udp 85-95", "tcp 200", "udp 200", "tcp *"},
	})
	if fs[0].Ports != nil || !slices.Equal(fs[0].Ranges, []PortRange{{1, 65535, true, true}}) {
		t.Errorf("1-65535: Ports %v, Ranges %v", fs[0].Ports, fs[0].Ranges)
	}
	// "tcp *" covers TCP: only the UDP parts remain.
	want := []PortRange{{80, 95, false, true}, {200, 200, false, true}}
	if !slices.Equal(fs[1].Ranges, want) || fs[1].AllPorts != (ConnTypeFilter{TCP: true}) {
		t.Errorf("got %v %v, want %v and all TCP", fs[1].Ranges, fs[1].AllPorts, want)
	}
	got := normaliseRanges([]PortRange{{10, 20, true, false}, {15, 30, false, true}, {31, 40, false, true}, {65535, 65535, true, true}}, ConnTypeFilter{})
	want = []PortRange{{10, 14, true, false}, {15, 20, true, true}, {21, 40, false, true}, {65535, 65535, true, true}}
	if !slices.Equal(got, want) {
		t.Errorf("normaliseRanges: got %v, want %v", got, want)
	}
}

// Port specs: the protocol prefix in any case, white space, "tcp80".
func TestFilterPortSpecForms(t *testing.T) {
	fs := mustParse(t, map[string][]string{"10.0.0.1": {" TCP 80 ", "Udp 53", "tcp81", "uDp  100 - 102"}})
	want := []PortRange{{53, 53, false, true}, {80, 81, true, false}, {100, 102, false, true}}
	if !slices.Equal(fs[0].Ranges, want) {
		t.Errorf("got %v, want %v", fs[0].Ranges, want)
	}
}

// A filter built by hand the seed's way (IP, Ports) still works.
func TestFilterHandBuiltSeedStruct(t *testing.T) {
	_, n, _ := net.ParseCIDR("10.1.0.0/16")
	f := &ConnectionFilter{IP: n, Ports: map[uint16]ConnTypeFilter{80: {TCP: true}, 53: {UDP: true}}}
	if !IsBlacklistedConnection(nil, []*ConnectionFilter{f}, dst("10.1.2.3", 80, TCP)) {
		t.Error("80/tcp not matched")
	}
	if IsBlacklistedConnection(nil, []*ConnectionFilter{f}, dst("10.1.2.3", 80, UDP)) {
		t.Error("80/udp matched")
	}
	if IsBlacklistedConnection(nil, []*ConnectionFilter{f}, dst("10.2.2.3", 80, TCP)) {
		t.Error("outside the CIDR matched")
	}
	kt, err := (&ConnectionFilters{ExcludedDestination: []*ConnectionFilter{f}}).KernelTables()
	if err != nil {
		t.Fatal(err)
	}
	want := []KernelFilterEntry{{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Ranges: []PortRange{{53, 53, false, true}, {80, 80, true, false}}}}
	if fmt.Sprint(kt.ExcludedDestination) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", kt.ExcludedDestination, want)
	}
	// A non-contiguous mask: matched as the seed did, refused for the kernel.
	odd := &ConnectionFilter{IP: &net.IPNet{IP: net.IPv4(10, 0, 0, 1).To4(), Mask: net.IPv4Mask(255, 0, 255, 0)}, AllPorts: ConnTypeFilter{TCP: true}}
	if !IsBlacklistedConnection(nil, []*ConnectionFilter{odd}, dst("10.9.0.7", 1, TCP)) {
		t.Error("non-contiguous mask not matched")
	}
	if _, err := (&ConnectionFilters{ExcludedDestination: []*ConnectionFilter{odd}}).KernelTables(); err == nil {
		t.Error("non-contiguous mask accepted for the kernel")
	}
}

// Difference 9: bounded.
func TestFilterEntryLimit(t *testing.T) {
	m := map[string][]string{}
	for i := range MaxFilterEntries/2 + 1 {
		m[netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String()] = []string{"80", "81"}
	}
	_, err := ParseConnectionFilters(m)
	if err == nil || !strings.Contains(err.Error(), "connection filters: 10002 port specs, more than the limit of 10000") {
		t.Errorf("got %v", err)
	}
	delete(m, "10.0.0.0")
	if _, err := ParseConnectionFilters(m); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	_, err = NewConnectionFilters(m, map[string][]string{"*": {"1"}, "1.1.1.1": {"1"}, "1.1.1.2": {"1"}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "more than the limit of 10000") {
		t.Errorf("over all lists: got %v", err)
	}
}

func mustFilters(t testing.TB, exSrc, exDst, inSrc, inDst map[string][]string) *ConnectionFilters {
	t.Helper()
	cf, err := NewConnectionFilters(exSrc, exDst, inSrc, inDst)
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

func conn(s string, sp uint16, d string, dp uint16, typ ConnectionType) *ConnectionStats {
	return &ConnectionStats{Source: mustAddr(s), SPort: sp, Dest: mustAddr(d), DPort: dp, Type: typ}
}

// The include form, and Traced.
func TestConnectionFiltersTraced(t *testing.T) {
	var none *ConnectionFilters
	if !none.Traced(conn("10.0.0.1", 1, "10.0.0.2", 2, TCP)) {
		t.Error("nil filters: not traced")
	}
	if cf := mustFilters(t, nil, nil, nil, nil); cf != nil {
		t.Errorf("no filters: got %+v, want nil", cf)
	}
	cf := mustFilters(t,
		map[string][]string{"*": {"tcp 22"}},                                             // excluded local ssh server
		map[string][]string{"10.9.0.0/16": {"*"}},                                        // excluded peers
		map[string][]string{"*": {"tcp 8080"}},                                           // included: our service
		map[string][]string{"10.0.0.0/8": {"tcp *", "udp 53"}, "2001:db8::/32": {"443"}}, // included peers
	)
	for _, tc := range []struct {
		c    *ConnectionStats
		want bool
	}{
		{conn("10.1.0.1", 8080, "192.168.0.1", 50000, TCP), true},  // included source
		{conn("10.1.0.1", 8081, "192.168.0.1", 50000, TCP), false}, // neither included
		{conn("10.1.0.1", 50000, "10.2.0.1", 5432, TCP), true},     // included destination
		{conn("10.1.0.1", 50000, "10.2.0.1", 5432, UDP), false},    // udp: only 53
		{conn("10.1.0.1", 50000, "10.2.0.1", 53, UDP), true},
		{conn("10.1.0.1", 50000, "10.9.0.1", 5432, TCP), false},       // excluded wins over included
		{conn("10.1.0.1", 8080, "10.9.0.1", 50000, TCP), false},       // excluded wins over included source
		{conn("10.1.0.1", 22, "10.2.0.1", 50000, TCP), false},         // excluded source
		{conn("2001:db8::1", 40000, "2001:db8:1::1", 443, UDP), true}, // v6
		{conn("2001:db8::1", 40000, "2001:db9::1", 443, UDP), false},
	} {
		if got := cf.Traced(tc.c); got != tc.want {
			t.Errorf("%s:%d -> %s:%d %s: Traced %v, want %v", tc.c.Source, tc.c.SPort, tc.c.Dest, tc.c.DPort, tc.c.Type, got, tc.want)
		}
	}
	// Include "*" with "*" is allowed and includes everything; only
	// exclusions still apply.
	all := mustFilters(t, nil, map[string][]string{"10.9.0.0/16": {"*"}}, map[string][]string{"*": {"*"}}, nil)
	if !all.Traced(conn("1.2.3.4", 1, "5.6.7.8", 2, UDP)) || all.Traced(conn("1.2.3.4", 1, "10.9.7.8", 2, UDP)) {
		t.Error(`include "*": ["*"]: wrong`)
	}
	if _, err := ParseIncludedConnectionFilters(map[string][]string{"*": {"*"}}); err != nil {
		t.Errorf(`include "*": ["*"]: %v`, err)
	}
	_, err := NewConnectionFilters(nil, map[string][]string{"*": {"*"}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), `excluded_destination_connections["*"]: address "*" with port "*" (every port of both protocols) excludes every connection`) {
		t.Errorf(`exclude "*": ["*"]: %v`, err)
	}
	// Only an included-destination list: the source side includes nothing.
	dOnly := mustFilters(t, nil, nil, nil, map[string][]string{"10.0.0.0/8": {"*"}})
	if dOnly.Traced(conn("10.0.0.1", 1, "11.0.0.1", 2, TCP)) || !dOnly.Traced(conn("11.0.0.1", 1, "10.0.0.1", 2, TCP)) {
		t.Error("included destination only: wrong")
	}
}

func TestFilterKernelTables(t *testing.T) {
	cf := mustFilters(t, nil, map[string][]string{
		"*":             {"9000"},
		"10.0.0.0/8":    {"80"},
		"10.1.0.0/16":   {"udp 53", "tcp *"},
		"0.0.0.0/0":     {"udp 9001"},
		"2001:db8::/32": {"81-82"},
	}, nil, nil)
	kt, err := cf.KernelTables()
	if err != nil {
		t.Fatal(err)
	}
	want := []KernelFilterEntry{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Ranges: []PortRange{{9000, 9000, true, true}, {9001, 9001, false, true}}},
		{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Ranges: []PortRange{{80, 80, true, true}, {9000, 9000, true, true}, {9001, 9001, false, true}}},
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), AllTCP: true, Ranges: []PortRange{{53, 53, false, true}, {80, 80, false, true}, {9000, 9001, false, true}}},
		{Prefix: netip.MustParsePrefix("::/0"), Ranges: []PortRange{{9000, 9000, true, true}}},
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Ranges: []PortRange{{81, 82, true, true}, {9000, 9000, true, true}}},
	}
	if fmt.Sprint(kt.ExcludedDestination) != fmt.Sprint(want) {
		t.Errorf("got\n%v\nwant\n%v", kt.ExcludedDestination, want)
	}
	for _, e := range kt.ExcludedDestination {
		if e.Prefix.Addr().Is4() != (e.Prefix.Addr().BitLen() == 32) || e.Prefix.Addr().Is4In6() {
			t.Errorf("%s: not a plain 4- or 16-byte prefix", e.Prefix)
		}
	}
	if kt.ExcludedSource != nil || kt.IncludedSource != nil || kt.IncludedDestination != nil {
		t.Errorf("empty lists gave entries: %+v", kt)
	}
	if kt, err := (*ConnectionFilters)(nil).KernelTables(); kt != nil || err != nil {
		t.Errorf("nil filters: %v %v", kt, err)
	}
}

func TestFilterKernelTablesTooManyRanges(t *testing.T) {
	ports := func(n, step int) []string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprint(1000+i*step))
		}
		return s
	}
	// 17 contiguous ports merge into one range.
	if _, err := mustFilters(t, map[string][]string{"10.0.0.1": ports(17, 1)}, nil, nil, nil).KernelTables(); err != nil {
		t.Errorf("contiguous: %v", err)
	}
	// 16 ranges fit.
	if _, err := mustFilters(t, map[string][]string{"10.0.0.1": ports(16, 2)}, nil, nil, nil).KernelTables(); err != nil {
		t.Errorf("16 ranges: %v", err)
	}
	// 9 + 8 from an enclosing prefix: the union needs 17.
	cf := mustFilters(t, nil, map[string][]string{"10.0.0.0/8": ports(9, 2), "10.1.2.3": {"tcp 1-5", "udp 2000", "3000", "4000", "5000", "6000", "7000", "8000"}}, nil, nil)
	_, err := cf.KernelTables()
	if err == nil || err.Error() != "excluded_destination_connections: prefix 10.1.2.3/32 needs 17 port ranges in the kernel, more than 16" {
		t.Errorf("got %v", err)
	}
	// User space still filters.
	if cf.Traced(conn("1.1.1.1", 1, "10.1.2.3", 3000, TCP)) || !cf.Traced(conn("1.1.1.1", 1, "10.1.2.3", 3001, TCP)) {
		t.Error("Traced wrong")
	}
}

func TestFilterKernelEntryMatches(t *testing.T) {
	e := KernelFilterEntry{AllUDP: true, Ranges: []PortRange{{80, 80, true, false}, {100, 200, true, false}}}
	for _, tc := range []struct {
		port uint16
		t    ConnectionType
		want bool
	}{
		{1, UDP, true}, {80, TCP, true}, {81, TCP, false}, {100, TCP, true}, {200, TCP, true}, {201, TCP, false}, {99, TCP, false},
	} {
		if got := e.Matches(tc.port, tc.t); got != tc.want {
			t.Errorf("%d/%s: %v, want %v", tc.port, tc.t, got, tc.want)
		}
	}
}

// randFilterMap draws a filter list whose prefixes nest and whose ports
// cluster, so that unions and boundaries are exercised.
func randFilterMap(r *rand.Rand) map[string][]string {
	v4 := []string{"10.0.0.0", "10.1.0.0", "10.1.2.3", "10.1.2.128", "192.168.0.1", "0.0.0.0"}
	v6 := []string{"2001:db8::", "2001:db8:1::5", "2001:db8:1:0:8000::", "::"}
	ports := []int{1, 2, 52, 53, 54, 79, 80, 81, 443, 1000, 65534, 65535}
	protos := []string{"", "", "tcp ", "udp ", "TCP", "Udp "}
	m := map[string][]string{}
	for range r.IntN(6) {
		var key string
		switch x := r.IntN(10); {
		case x == 0:
			key = "*"
		case x < 6:
			a := v4[r.IntN(len(v4))]
			if b := []int{0, 8, 16, 24, 25, 31, 32, 32}[r.IntN(8)]; b == 32 && r.IntN(2) == 0 {
				key = a
			} else {
				key = fmt.Sprintf("%s/%d", a, b)
			}
		case x < 9:
			a := v6[r.IntN(len(v6))]
			if b := []int{0, 16, 32, 48, 64, 65, 127, 128, 128}[r.IntN(9)]; b == 128 && r.IntN(2) == 0 {
				key = a
			} else {
				key = fmt.Sprintf("%s/%d", a, b)
			}
		default:
			key = fmt.Sprintf("::ffff:%s/%d", v4[r.IntN(len(v4))], []int{96, 104, 112, 120, 128}[r.IntN(5)])
		}
		var specs []string
		for range 1 + r.IntN(3) {
			p := protos[r.IntN(len(protos))]
			switch x := r.IntN(10); {
			case x == 0:
				specs = append(specs, p+"*")
			case x < 5:
				specs = append(specs, fmt.Sprint(p, ports[r.IntN(len(ports))]))
			default:
				a, b := ports[r.IntN(len(ports))], ports[r.IntN(len(ports))]
				specs = append(specs, fmt.Sprintf("%s%d-%d", p, min(a, b), max(a, b)))
			}
		}
		m[key] = specs
	}
	return m
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// probeAddrs returns addresses at and around the edges of every filter
// prefix, and a few others, at most limit.
func probeAddrs(cf *ConnectionFilters, limit int) []netip.Addr {
	set := map[netip.Addr]bool{}
	var out []netip.Addr
	add := func(a netip.Addr) {
		if a.IsValid() && !set[a] && len(out) < limit {
			set[a] = true
			out = append(out, a)
		}
	}
	for _, s := range []string{"10.1.2.3", "192.168.0.1", "8.8.8.8", "2001:db8:1::5", "::1", "::ffff:10.1.2.3"} {
		add(mustAddr(s))
	}
	for _, l := range [][]*ConnectionFilter{cf.ExcludedSource, cf.ExcludedDestination, cf.IncludedSource, cf.IncludedDestination} {
		for _, f := range l {
			p, wild, ok := f.prefix()
			if wild || !ok {
				continue
			}
			first, last := p.Masked().Addr(), lastAddr(p)
			add(first)
			add(last)
			add(first.Prev())
			add(last.Next())
			if first.Is4() {
				add(netip.AddrFrom16(first.As16())) // mapped
			}
		}
	}
	return out
}

func probePorts(cf *ConnectionFilters, limit int) []uint16 {
	set := map[uint16]bool{}
	var out []uint16
	add := func(p int) {
		if p >= 0 && p <= 65535 && !set[uint16(p)] && len(out) < limit {
			set[uint16(p)] = true
			out = append(out, uint16(p))
		}
	}
	for _, p := range []int{1, 80, 65535, 12345} {
		add(p)
	}
	for _, l := range [][]*ConnectionFilter{cf.ExcludedSource, cf.ExcludedDestination, cf.IncludedSource, cf.IncludedDestination} {
		for _, f := range l {
			for _, r := range f.Ranges {
				add(int(r.Lo))
				add(int(r.Hi))
				add(int(r.Lo) - 1)
				add(int(r.Hi) + 1)
			}
		}
	}
	return out
}

// checkKernelAgrees checks that the kernel tables of cf (if they can be
// built) decide as cf does on connections probing its edges. It returns
// false when the tables could not be built (too many ranges).
func checkKernelAgrees(t testing.TB, cf *ConnectionFilters, probes int) bool {
	t.Helper()
	kt, err := cf.KernelTables()
	if err != nil {
		if !strings.Contains(err.Error(), "port ranges in the kernel, more than") {
			t.Fatalf("KernelTables: %v", err)
		}
		return false
	}
	if cf == nil {
		return kt == nil
	}
	for _, tab := range [][]KernelFilterEntry{kt.ExcludedSource, kt.ExcludedDestination, kt.IncludedSource, kt.IncludedDestination} {
		seen := map[netip.Prefix]bool{}
		for _, e := range tab {
			if seen[e.Prefix] || e.Prefix != e.Prefix.Masked() || e.Prefix.Addr().Is4In6() || len(e.Ranges) > MaxKernelRanges {
				t.Fatalf("bad entry %+v", e)
			}
			seen[e.Prefix] = true
			for i, r := range e.Ranges {
				if r.Lo > r.Hi || (!r.TCP && !r.UDP) || (i > 0 && e.Ranges[i-1].Hi >= r.Lo) || (r.TCP && e.AllTCP) || (r.UDP && e.AllUDP) {
					t.Fatalf("entry %s: bad ranges %v", e.Prefix, e.Ranges)
				}
			}
		}
	}
	// The same filters with and without the index Traced uses.
	indexed, linear := *cf, *cf
	linear.index = nil
	if err := indexed.buildIndex(); err != nil {
		t.Fatal(err)
	}
	addrs := probeAddrs(cf, probes)
	ports := probePorts(cf, probes)
	lists := []struct {
		name string
		fs   []*ConnectionFilter
		tab  []KernelFilterEntry
	}{
		{"excluded source", cf.ExcludedSource, kt.ExcludedSource},
		{"excluded destination", cf.ExcludedDestination, kt.ExcludedDestination},
		{"included source", cf.IncludedSource, kt.IncludedSource},
		{"included destination", cf.IncludedDestination, kt.IncludedDestination},
	}
	for i, a := range addrs {
		for j, p := range ports {
			for _, typ := range []ConnectionType{TCP, UDP} {
				for _, l := range lists {
					if d, k := matchSide(l.fs, a, p, typ), kernelMatch(l.tab, a, p, typ); d != k {
						e, _ := LookupKernelEntry(l.tab, a)
						t.Fatalf("%s %s:%d %s: filters say %v, kernel table says %v (entry %+v)", l.name, a, p, typ, d, k, e)
					}
				}
				c := &ConnectionStats{Source: a, SPort: p, Dest: addrs[(i+j+1)%len(addrs)], DPort: ports[(i*7+j)%len(ports)], Type: typ}
				if d, x, k := linear.Traced(c), indexed.Traced(c), kt.Traced(c); d != k || d != x {
					t.Fatalf("%s:%d -> %s:%d %s: Traced %v, with the index %v, kernel tables %v", c.Source, c.SPort, c.Dest, c.DPort, typ, d, x, k)
				}
			}
		}
	}
	return true
}

// Property: for random filter sets and connections, a longest-prefix lookup
// in KernelTables decides as matching every filter does.
func TestFilterKernelTablesMatchDirect(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	built, refused, invalid := 0, 0, 0
	for range 800 {
		var lists [4]map[string][]string
		for i := range lists {
			if r.IntN(3) > 0 {
				lists[i] = randFilterMap(r)
			}
		}
		cf, err := NewConnectionFilters(lists[0], lists[1], lists[2], lists[3])
		if err != nil {
			invalid++ // duplicate normalised keys, "*" with "*"
			continue
		}
		if checkKernelAgrees(t, cf, 48) {
			built++
		} else {
			refused++
		}
	}
	t.Logf("%d filter sets checked, %d refused for the kernel (too many ranges), %d invalid", built, refused, invalid)
	if built < 500 {
		t.Errorf("only %d filter sets checked", built)
	}
}

func BenchmarkFilterTraced(b *testing.B) {
	cf := mustFilters(b, seedSourceFilters, seedDestinationFilters, nil, nil)
	c := conn("10.3.0.1", 40000, "2001:db8::5:1", 81, TCP)
	for b.Loop() {
		cf.Traced(c)
	}
}

// The seed's parsers of one list and of the four, as the tests call them;
// production parses the config file (ParseConfigFile).

// ParseConnectionFilters parses exclusion filters (the seed's format). Every
// bad entry is reported, in the returned error (see the package comment for
// the differences from the seed); on error the filters are nil.
func ParseConnectionFilters(filters map[string][]string) ([]*ConnectionFilter, error) {
	return parseFilterListErr("", filters, false)
}

// ParseIncludedConnectionFilters parses include filters: the same format,
// except that "*" with "*" is allowed (it includes every connection).
func ParseIncludedConnectionFilters(filters map[string][]string) ([]*ConnectionFilter, error) {
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

// NewConnectionFilters parses the four lists; errors name the list, the key
// and the port spec. It returns nil (trace everything) when all are empty.
func NewConnectionFilters(excludedSource, excludedDestination, includedSource, includedDestination map[string][]string) (*ConnectionFilters, error) {
	cf, errs := newConnectionFilters(excludedSource, excludedDestination, includedSource, includedDestination)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cf, nil
}
