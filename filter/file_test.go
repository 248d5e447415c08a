package filter

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigFileFull(t *testing.T) {
	fc, err := LoadConfigFile("testdata/config/full.yml")
	if err != nil {
		t.Fatal(err)
	}
	cf := fc.Filters
	if cf == nil || len(cf.ExcludedSource) != 3 || len(cf.ExcludedDestination) != 3 || len(cf.IncludedSource) != 1 || len(cf.IncludedDestination) != 2 {
		t.Fatalf("filters: %+v", cf)
	}
	for _, tc := range []struct {
		c    Conn
		want bool
	}{
		{conn("10.5.0.1", 40000, "10.6.0.1", 5432, TCP), true},            // included destination 10/8
		{conn("10.5.0.1", 40000, "11.6.0.1", 5432, TCP), false},           // not included
		{conn("11.5.0.1", 443, "11.6.0.1", 40000, TCP), true},             // included source port
		{conn("11.5.0.1", 8085, "11.6.0.1", 40000, TCP), true},            // included source range
		{conn("11.5.0.1", 8085, "11.6.0.1", 40000, UDP), false},           // tcp only
		{conn("10.0.0.2", 53400, "10.6.0.1", 80, TCP), false},             // excluded source range
		{conn("10.0.0.2", 53400, "10.6.0.1", 80, UDP), true},              // udp: only 119 and 53361
		{conn("1.1.1.1", 5000, "10.6.0.1", 80, UDP), false},               // excluded "udp *"
		{conn("10.3.0.1", 9000, "10.6.0.1", 80, TCP), false},              // excluded "*": 9000
		{conn("10.3.0.1", 40000, "10.0.0.7", 8081, TCP), false},           // excluded destination, unquoted
		{conn("10.3.0.1", 40000, "10.0.1.7", 8081, TCP), true},            // outside 10.0.0.0/24
		{conn("10.3.0.1", 443, "192.168.3.4", 1, TCP), false},             // mapped exclusion unmapped
		{conn("2001:db8::1", 40000, "2001:db8::ff:1", 80, TCP), false},    // excluded /55
		{conn("2001:db8::1", 40000, "2001:db8:0:1000::1", 80, TCP), true}, // outside the /55
		{conn("2001:db8::1", 40000, "2001:db8:0:1000::1", 80, UDP), false},
	} {
		if got := cf.Traced(tc.c); got != tc.want {
			t.Errorf("%s:%d -> %s:%d %s: Traced %v, want %v", tc.c.Local.Addr(), tc.c.Local.Port(), tc.c.Remote.Addr(), tc.c.Remote.Port(), tc.c.Proto, got, tc.want)
		}
	}
	if !checkKernelAgrees(t, cf, 48) {
		t.Error("full.yml: no kernel tables")
	}
	for _, tc := range []struct {
		addr, want string
	}{
		{"10.200.0.1", "10.0.0.0/8"},
		{"10.1.200.1", "10.1.0.0/16"},
		{"10.1.2.3", "10.1.2.0/24"},
		{"::ffff:10.1.2.3", "10.1.2.0/24"},
		{"192.168.1.1", "192.168.0.0/16"},
		{"172.20.0.1", "172.16.0.0/12"},
		{"2001:db8:1::9", "2001:db8:1::/48"},
		{"2001:db8:2::9", "2001:db8::/32"},
		{"11.0.0.1", ""},
		{"2001:db9::1", ""},
	} {
		g, ok := fc.Group(mustAddr(tc.addr))
		if got := map[bool]string{true: g.String(), false: ""}[ok]; got != tc.want {
			t.Errorf("Group(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if g, ok := fc.Group(netip.Addr{}); ok {
		t.Errorf("Group(invalid) = %s", g)
	}
	if len(fc.AddressGroups) != 7 || fc.AddressGroups[6] != netip.MustParsePrefix("172.16.0.0/12") {
		t.Errorf("AddressGroups %v", fc.AddressGroups)
	}
}

func TestConfigFileOtherFixtures(t *testing.T) {
	fc, err := LoadConfigFile("testdata/config/empty.yml")
	if err != nil || fc.Filters != nil || fc.AddressGroups != nil {
		t.Errorf("empty.yml: %+v %v", fc, err)
	}
	for _, data := range []string{"", "---\n", "~\n", "# only a comment\n", "excluded_source_connections:\naddress_groups: []\n"} {
		fc, err := ParseConfigFile([]byte(data), "x.yml")
		if err != nil || fc.Filters != nil || len(fc.AddressGroups) != 0 {
			t.Errorf("%q: %+v %v", data, fc, err)
		}
		if !fc.Filters.Traced(conn("1.1.1.1", 1, "2.2.2.2", 2, TCP)) {
			t.Errorf("%q: not traced", data)
		}
	}
	fc, err = LoadConfigFile("testdata/config/include_all.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !fc.Filters.Traced(conn("1.1.1.1", 1, "2.2.2.2", 2, UDP)) || fc.Filters.Traced(conn("1.1.1.1", 1, "10.9.2.2", 2, UDP)) {
		t.Error("include_all.yml: wrong")
	}
	fc, err = LoadConfigFile("testdata/config/groups_only.yml")
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{"10.1.1.1": "10.0.0.0/8", "11.1.1.1": "0.0.0.0/0", "2001:db8::1": "::/0"} {
		if g, ok := fc.Group(mustAddr(addr)); !ok || g.String() != want {
			t.Errorf("Group(%s) = %s %v, want %s", addr, g, ok, want)
		}
	}
}

// Every malformed input names the file, the key and the entry.
func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"bad CIDR", "excluded_destination_connections:\n  \"10.0.0.0/33\": [\"80\"]\n",
			`config.yml: excluded_destination_connections["10.0.0.0/33"]: invalid CIDR: prefix length out of range (line 2)`},
		{"bad IP", "excluded_destination_connections:\n  10.0.0.256: [\"80\"]\n",
			`config.yml: excluded_destination_connections["10.0.0.256"]: invalid IP address: IPv4 field has value >255 (line 2)`},
		{"port 0", "excluded_source_connections:\n  10.0.0.1: [\"0\"]\n",
			`config.yml: excluded_source_connections["10.0.0.1"]: port spec "0": port 0 is not a valid port (ports are 1-65535) (line 2)`},
		{"port 0 in range", "excluded_source_connections:\n  10.0.0.1: [\"0-10\"]\n",
			`excluded_source_connections["10.0.0.1"]: port spec "0-10": port 0 is not a valid port`},
		{"port 70000", "excluded_source_connections:\n  10.0.0.1: [70000]\n",
			`config.yml: excluded_source_connections["10.0.0.1"]: port spec "70000": port 70000 out of range (ports are 1-65535)`},
		{"reversed range", "included_source_connections:\n  10.0.0.1: [\"udp 90-80\"]\n",
			`config.yml: included_source_connections["10.0.0.1"]: port spec "udp 90-80": reversed range 90-80 (the low port must come first)`},
		{"* with *", "excluded_destination_connections:\n  \"*\": [\"*\"]\n",
			`config.yml: excluded_destination_connections["*"]: address "*" with port "*" (every port of both protocols) excludes every connection`},
		{"* with tcp * and udp *", "excluded_source_connections:\n  \"*\": [\"tcp *\", \"udp *\"]\n",
			`config.yml: excluded_source_connections["*"]: address "*" with port "*"`},
		{"unknown key", "excluded_destination_connections: {}\nexclude_source_connections:\n  10.0.0.1: [\"80\"]\n",
			`config.yml: line 2: unknown key "exclude_source_connections" (known keys: excluded_source_connections,`},
		{"trailing protocol", "excluded_destination_connections:\n  \"2001:db8::2:2\": [\"3333 udp\"]\n",
			`config.yml: excluded_destination_connections["2001:db8::2:2"]: port spec "3333 udp": the protocol goes before the port, as in "udp 3333"`},
		{"3-part range", "excluded_destination_connections:\n  10.0.0.1: [\"8080-8082-8085\"]\n",
			`config.yml: excluded_destination_connections["10.0.0.1"]: port spec "8080-8082-8085": a range has exactly two ports`},
		{"non-numeric port", "excluded_destination_connections:\n  10.0.0.1: [\"http\"]\n",
			`config.yml: excluded_destination_connections["10.0.0.1"]: port spec "http": invalid port "http" (want a number 1-65535)`},
		{"non-numeric range", "excluded_destination_connections:\n  10.0.0.1: [\"30-ABC\"]\n",
			`port spec "30-ABC": invalid port "ABC"`},
		{"empty key", "excluded_destination_connections:\n  \"\": [\"80\"]\n",
			`config.yml: excluded_destination_connections[""]: empty address (want "*", an IP address or a CIDR) (line 2)`},
		{"empty port list", "excluded_destination_connections:\n  10.0.0.1: []\n",
			`config.yml: excluded_destination_connections["10.0.0.1"]: empty port list (want at least one port spec, e.g. "*") (line 2)`},
		{"null port list", "excluded_destination_connections:\n  10.0.0.1:\n",
			`config.yml: excluded_destination_connections["10.0.0.1"]: empty port list`},
		{"empty port spec", "excluded_destination_connections:\n  10.0.0.1: [\"\"]\n",
			`config.yml: excluded_destination_connections["10.0.0.1"]: port spec "": missing port`},
		{"wildcard in address", "excluded_destination_connections:\n  10.0.*: [\"80\"]\n",
			`config.yml: excluded_destination_connections["10.0.*"]: invalid address: the wildcard is "*" alone`},
		{"bad address group", "address_groups:\n  - 10.0.0.0/8\n  - 10.300.0.0/16\n",
			`config.yml: address_groups[1] "10.300.0.0/16": invalid CIDR: ParseAddr("10.300.0.0"): IPv4 field has value >255 (line 3)`},
		{"address group not a CIDR", "address_groups: [10.0.0.1]\n",
			`config.yml: address_groups[0] "10.0.0.1": invalid CIDR: no prefix length (e.g. 10.0.0.1/32) (line 1)`},
		{"address group prefix too long", "address_groups: [\"2001:db8::/129\"]\n",
			`config.yml: address_groups[0] "2001:db8::/129": invalid CIDR: prefix length out of range`},
		{"group with host bits", "address_groups:\n  - 10.0.0.1/8\n",
			`config.yml: address_groups[0] "10.0.0.1/8": host bits set: did you mean 10.0.0.0/8? (line 2)`},
		{"duplicate group", "address_groups:\n  - 10.0.0.0/8\n  - 192.168.0.0/16\n  - 10.0.0.0/8\n",
			`config.yml: address_groups[2] "10.0.0.0/8": duplicate group: same as address_groups[0] (10.0.0.0/8) (line 4)`},
		{"duplicate mapped group", "address_groups: [10.0.0.0/8, \"::ffff:10.0.0.0/104\"]\n",
			`config.yml: address_groups[1] "::ffff:10.0.0.0/104": duplicate group: same as address_groups[0] (10.0.0.0/8)`},
		{"null group", "address_groups: [10.0.0.0/8, ~]\n",
			`config.yml: address_groups[1]: line 1: want a CIDR, got null "~"`},
		{"duplicate normalised filter key", "excluded_source_connections:\n  10.0.0.1: [\"80\"]\n  10.0.0.1/32: [\"81\"]\n",
			`config.yml: excluded_source_connections["10.0.0.1/32"]: same address as ["10.0.0.1"] (both are 10.0.0.1/32): merge their port specs (line 3)`},
		{"duplicate filter key", "excluded_source_connections:\n  10.0.0.1: [\"80\"]\n  10.0.0.1: [\"81\"]\n",
			`config.yml: excluded_source_connections["10.0.0.1"]: line 3: key repeated (first at line 2)`},
		{"duplicate top-level key", "address_groups: []\nexcluded_source_connections: {}\naddress_groups: []\n",
			`config.yml: address_groups: line 3: key repeated (first at line 1)`},
		{"YAML syntax error", "excluded_source_connections:\n  10.0.0.1: [\"80\"\n  10.0.0.2: [\"81\"]\n",
			`config.yml: yaml: line 1: did not find expected ',' or ']'`}, // yaml.v3's line: near the construct, not always exact
		{"YAML bad indentation", "excluded_source_connections:\n  10.0.0.1: [\"80\"]\n 10.0.0.2: [\"81\"]\n",
			`config.yml: yaml: line 2: did not find expected key`}, // yaml.v3's line: near the construct, not always exact
		{"YAML tab", "excluded_source_connections:\n\t10.0.0.1: [\"80\"]\n",
			`config.yml: yaml: line 2: found character that cannot start any token`},
		{"string where a list is expected", "excluded_source_connections:\n  10.0.0.1: \"80\"\n",
			`config.yml: excluded_source_connections["10.0.0.1"]: line 2: want a list of port specs (e.g. ["80"]), got a string "80"`},
		{"mapping where a list is expected", "excluded_source_connections:\n  10.0.0.1: {tcp: 80}\n",
			`config.yml: excluded_source_connections["10.0.0.1"]: line 2: want a list of port specs (e.g. ["80"]), got a mapping`},
		{"list of lists", "excluded_source_connections:\n  10.0.0.1: [[80]]\n",
			`config.yml: excluded_source_connections["10.0.0.1"]: line 2: want a port spec, got a list`},
		{"list where a mapping is expected", "included_destination_connections:\n  - 10.0.0.1\n",
			`config.yml: included_destination_connections: line 2: want a mapping from address to a list of port specs`},
		{"string where groups expected", "address_groups: 10.0.0.0/8\n",
			`config.yml: address_groups: line 1: want a list of CIDRs (e.g. ["10.0.0.0/8"]), got a string "10.0.0.0/8"`},
		{"top level is a list", "- excluded_source_connections\n",
			`config.yml: line 1: want a mapping with keys excluded_source_connections,`},
		{"two documents", "address_groups: []\n---\naddress_groups: []\n",
			`config.yml: line 2: a second YAML document: the file must hold one`},
		{"complex key", "excluded_source_connections:\n  ? [a]\n  : [\"80\"]\n",
			`config.yml: excluded_source_connections: line 2: want an address as key, got a list`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := ParseConfigFile([]byte(tc.yaml), "config.yml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error\n%v\nwant it to contain\n%s", err, tc.want)
			}
			if fc != nil {
				t.Errorf("got a config with the error: %+v", fc)
			}
			if err != nil {
				for _, l := range strings.Split(err.Error(), "\n") {
					if !strings.HasPrefix(l, "config.yml: ") {
						t.Errorf("error line %q does not name the file", l)
					}
				}
			}
		})
	}
}

// Every bad entry is reported at once, in a fixed order.
func TestConfigFileAllErrorsAtOnce(t *testing.T) {
	data := []byte(`
excluded_source_connections:
  10.0.0.9: ["0"]
  10.0.0.1: "80"
  10.0.0.2: ["70000"]
included_destination_connections:
  "*": ["*"]
  "::1/200": ["80"]
address_groups: [10.0.0.1/8, nonsense]
bogus: 1
`)
	want := strings.Join([]string{
		`f.yml: excluded_source_connections["10.0.0.1"]: line 4: want a list of port specs (e.g. ["80"]), got a string "80"`,
		`f.yml: line 10: unknown key "bogus" (known keys: excluded_source_connections, excluded_destination_connections, included_source_connections, included_destination_connections, address_groups, cgroups)`,
		`f.yml: address_groups[0] "10.0.0.1/8": host bits set: did you mean 10.0.0.0/8? (line 9)`,
		`f.yml: address_groups[1] "nonsense": invalid CIDR: no prefix length (line 9)`,
		`f.yml: excluded_source_connections["10.0.0.2"]: port spec "70000": port 70000 out of range (ports are 1-65535) (line 5)`,
		`f.yml: excluded_source_connections["10.0.0.9"]: port spec "0": port 0 is not a valid port (ports are 1-65535) (line 3)`,
		`f.yml: included_destination_connections["::1/200"]: invalid CIDR: prefix length out of range (line 8)`,
	}, "\n")
	for range 10 {
		_, err := ParseConfigFile(data, "f.yml")
		if err == nil || err.Error() != want {
			t.Fatalf("got\n%v\nwant\n%s", err, want)
		}
	}
}

func TestConfigFileLoadErrors(t *testing.T) {
	_, err := LoadConfigFile("testdata/config/does-not-exist.yml")
	if err == nil || !strings.Contains(err.Error(), "testdata/config/does-not-exist.yml") {
		t.Errorf("missing file: %v", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(p, []byte("address_groups: [1.2.3.4/40]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfigFile(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+`: address_groups[0] "1.2.3.4/40": invalid CIDR`) {
		t.Errorf("bad file: %v", err)
	}
}

// Group's per-length index agrees with a linear most-specific scan.
func TestConfigFileGroupMatchesLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		var lines []string
		seen := map[netip.Prefix]bool{}
		for range 1 + r.IntN(20) {
			var p netip.Prefix
			if r.IntN(3) > 0 {
				p, _ = netip.AddrFrom4([4]byte{10, byte(r.IntN(3)), byte(r.IntN(3)), byte(r.IntN(256))}).Prefix(r.IntN(33))
			} else {
				p, _ = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(r.IntN(3)), 15: byte(r.IntN(256))}).Prefix(r.IntN(129))
			}
			if !seen[p] {
				seen[p] = true
				lines = append(lines, "  - "+p.String())
			}
		}
		fc, err := ParseConfigFile([]byte("address_groups:\n"+strings.Join(lines, "\n")+"\n"), "g.yml")
		if err != nil {
			t.Fatal(err)
		}
		linear := &FileConfig{AddressGroups: fc.AddressGroups} // no index: linear scan
		for range 200 {
			var a netip.Addr
			if r.IntN(3) > 0 {
				a = netip.AddrFrom4([4]byte{10, byte(r.IntN(3)), byte(r.IntN(3)), byte(r.IntN(256))})
			} else {
				a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(r.IntN(3)), 15: byte(r.IntN(256))})
			}
			g1, ok1 := fc.Group(a)
			g2, ok2 := linear.Group(a)
			if g1 != g2 || ok1 != ok2 {
				t.Fatalf("Group(%s): index %s %v, linear %s %v (groups %v)", a, g1, ok1, g2, ok2, fc.AddressGroups)
			}
		}
	}
}

func BenchmarkConfigFileGroup100k(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("address_groups:\n")
	for i := range 200 {
		sb.WriteString("  - " + netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16).String() + "\n")
		sb.WriteString("  - " + netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), byte(i), 0}), 24).String() + "\n")
	}
	sb.WriteString("  - 10.0.0.0/8\n  - 2001:db8::/32\n")
	fc, err := ParseConfigFile([]byte(sb.String()), "b.yml")
	if err != nil {
		b.Fatal(err)
	}
	addrs := make([]netip.Addr, 100000)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{byte(9 + r.IntN(2)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	for b.Loop() {
		for _, a := range addrs {
			fc.Group(a)
		}
	}
}
