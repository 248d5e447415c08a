package filter

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// decodeFilterInput turns fuzz input into a filter map: one entry a line,
// "key=spec;spec;...". A line without '=' is a key with no port spec; a
// key given twice gets the specs of both lines.
func decodeFilterInput(data string) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(data, "\n") {
		key, rest, found := strings.Cut(line, "=")
		if !found {
			if _, ok := m[key]; !ok {
				m[key] = nil
			}
			continue
		}
		m[key] = append(m[key], strings.Split(rest, ";")...)
	}
	return m
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// checkFilterInvariants checks the shape of parsed filters and that their
// normalised ranges match exactly what the port specs written say.
func checkFilterInvariants(t *testing.T, m map[string][]string, fs []*ConnectionFilter) {
	t.Helper()
	if len(fs) != len(m) {
		t.Fatalf("%d filters for %d keys", len(fs), len(m))
	}
	for _, f := range fs {
		if f.Prefix.IsValid() {
			if f.Prefix != f.Prefix.Masked() || f.Prefix.Addr().Is4In6() || f.Prefix.Addr().Zone() != "" {
				t.Fatalf("%q: prefix %s not normalised", f.Key, f.Prefix)
			}
			if p, _, ok := (&ConnectionFilter{IP: f.IP}).prefix(); !ok || p != f.Prefix {
				t.Fatalf("%q: IP %v is not prefix %s", f.Key, f.IP, f.Prefix)
			}
		} else if f.IP != nil || strings.TrimSpace(f.Key) != "*" {
			t.Fatalf("%q: wildcard with IP %v", f.Key, f.IP)
		}
		for i, r := range f.Ranges {
			if r.Lo > r.Hi || (!r.TCP && !r.UDP) || (i > 0 && f.Ranges[i-1].Hi >= r.Lo) ||
				(r.TCP && f.AllPorts.TCP) || (r.UDP && f.AllPorts.UDP) {
				t.Fatalf("%q: bad ranges %v (all %v)", f.Key, f.Ranges, f.AllPorts)
			}
		}
		// Probe every range edge: the filter matches a port exactly when
		// one of the specs as written does.
		var specs []PortRange
		var all []bool
		for _, s := range m[f.Key] {
			r, a, err := parsePortSpec(s)
			if err != nil {
				t.Fatalf("%q: spec %q: %v, but the filter parsed", f.Key, s, err)
			}
			specs = append(specs, r)
			all = append(all, a)
		}
		var ports []uint16
		for _, r := range append(slices.Clone(specs), f.Ranges...) {
			ports = append(ports, r.Lo, r.Hi, r.Lo-1, r.Hi+1) // wraps at 0 and 65535: fine
		}
		for _, p := range ports {
			for _, typ := range []Proto{TCP, UDP} {
				want := false
				for i, r := range specs {
					want = want || (protoIn(r.TCP, r.UDP, typ) && (all[i] || (r.Lo <= p && p <= r.Hi)))
				}
				if got := f.matchesPort(p, typ); got != want {
					t.Fatalf("%q %v: port %d %s: filter says %v, specs say %v (ranges %v)", f.Key, m[f.Key], p, typ, got, want, f.Ranges)
				}
			}
		}
	}
}

func FuzzParseConnectionFilters(f *testing.F) {
	for _, s := range []string{
		"10.0.0.2=tcp 53361-53500;udp 119;udp 53361\n1.1.1.1=udp *;tcp 11211\n2001:db8::2:1/55=80\n*=9000",
		"172.0.0.1=80;10;443\n*=9000\n::7f00:35:0:0=443\n10.0.0.10=3333;*",
		"172.0.0.2=80;10;443;53361-53370;100-100\n10.0.0.11=3333;*;53361-53370\n10.0.0.1=tcp *;53361-53370",
		"10.0.0.0/24=8080;8081;10255\n2001:db8::2:1=5001\n10.0.0.4=udp *;*",
		"*=*",
		"*=tcp *;udp *",
		"*=tcp *",
		"2001:db8::2:2=3333 udp",
		"10.0.0.3/24=30-ABC",
		"2001:db8::2:2/55=8080-8082-8085",
		"10.0.0.5=0-1",
		"=1234",
		"10.0.0.25=30;ABCD",
		"10.0.0.1\n10.0.0.1/32=80",
		"::ffff:10.0.0.0/104=1-65535\n10.0.0.0/8=udp 53",
		"2001:0db8:0000:0000:0000:0000:0000:0001=TCP80",
		"fe80::1%eth0=80",
		"0.0.0.0/0=udp 1-65535\n::/0=tcp 65535",
		"10.0.0.0/8=1;3;5;7;9;11;13;15;17;19;21;23;25;27;29;31;33",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		m := decodeFilterInput(data)
		ex, err := parseConnectionFilters(m)
		if _, err2 := parseConnectionFilters(m); errString(err) != errString(err2) {
			t.Fatalf("not deterministic:\n%v\n%v", err, err2)
		}
		inc, ierr := parseIncludedConnectionFilters(m)
		if err == nil && ierr != nil {
			t.Fatalf("excluded parses, included does not: %v", ierr)
		}
		if err != nil {
			if ex != nil {
				t.Fatal("filters with an error")
			}
			for _, l := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(l, "connection filter[") && !strings.HasPrefix(l, "connection filters: ") {
					t.Fatalf("error line %q does not name the entry", l)
				}
			}
		}
		if ierr != nil {
			return
		}
		checkFilterInvariants(t, m, inc)
		if err == nil {
			checkFilterInvariants(t, m, ex)
			checkKernelAgrees(t, &ConnectionFilters{ExcludedSource: ex, ExcludedDestination: ex}, 16)
			checkKernelAgrees(t, &ConnectionFilters{ExcludedDestination: ex, IncludedSource: inc}, 16)
		}
		checkKernelAgrees(t, &ConnectionFilters{IncludedDestination: inc}, 16)
	})
}

func FuzzParseConfigFile(f *testing.F) {
	files, _ := filepath.Glob("testdata/config/*.yml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"excluded_destination_connections:\n  \"10.0.0.0/33\": [\"80\"]\n",
		"excluded_source_connections:\n  10.0.0.1: \"80\"\n",
		"address_groups: [10.0.0.1/8, 10.0.0.0/8, \"::ffff:10.0.0.0/104\"]\n",
		"base: &a {\"10.0.0.1\": [\"80\"]}\nexcluded_source_connections: *a\n",
		"excluded_source_connections: &a\n  10.0.0.1: &p [\"80\", *p]\n",
		"included_source_connections:\n  \"*\": [\"*\"]\nexcluded_destination_connections:\n  \"*\": [\"udp *\"]\n",
		"address_groups: []\n---\n",
		"[1, 2]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fc, err := ParseConfigFile(data, "fuzz.yml")
		if _, err2 := ParseConfigFile(data, "fuzz.yml"); errString(err) != errString(err2) {
			t.Fatalf("not deterministic:\n%v\n%v", err, err2)
		}
		if err != nil {
			if fc != nil {
				t.Fatal("config with an error")
			}
			for _, l := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(l, "fuzz.yml: ") {
					t.Fatalf("error line %q does not name the file", l)
				}
			}
			return
		}
		if fc.Filters != nil {
			checkKernelAgrees(t, fc.Filters, 16)
		}
		// The group index agrees with a linear most-specific scan at the
		// edges of every group.
		linear := &FileConfig{AddressGroups: fc.AddressGroups}
		seen := map[netip.Prefix]bool{}
		for _, p := range fc.AddressGroups {
			if seen[p] || p != p.Masked() || p.Addr().Is4In6() {
				t.Fatalf("group %s: duplicate or not normalised", p)
			}
			seen[p] = true
			first, last := p.Addr(), lastAddr(p)
			for _, a := range []netip.Addr{first, last, first.Prev(), last.Next()} {
				if !a.IsValid() {
					continue
				}
				g1, ok1 := fc.Group(a)
				g2, ok2 := linear.Group(a)
				if g1 != g2 || ok1 != ok2 {
					t.Fatalf("Group(%s): index %s %v, linear %s %v", a, g1, ok1, g2, ok2)
				}
				if a == first && (!ok1 || g1.Bits() < p.Bits()) {
					t.Fatalf("Group(%s) = %s %v, want %s or more specific", a, g1, ok1, p)
				}
			}
		}
	})
}
