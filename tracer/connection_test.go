package tracer

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/conntrace/conntrace_exporter/filter"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

func sampleConn() ConnectionStats {
	return ConnectionStats{
		Source: netip.MustParseAddr("198.18.0.1"), Dest: netip.MustParseAddr("198.18.0.2"),
		SPort: 40000, DPort: 443, Pid: 1234, NetNS: 4026531840,
		Type: TCP, Family: AFINET, Direction: OUTGOING,
		Key:       ConnKey{Cookie: 99, Generation: 2},
		Monotonic: Counters{SentBytes: 2048, RecvBytes: 10, Retransmits: 3},
		RTT:       250, RTTVar: 40,
	}
}

func TestByteKeyRoundTripsThroughBeautifyKey(t *testing.T) {
	var buf bytes.Buffer
	c := sampleConn()
	k, err := c.ByteKey(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want := "p:1234|src:198.18.0.1:40000|dst:198.18.0.2:443|f:0|t:0|netns:4026531840|cookie:99/2"
	if got := BeautifyKey(string(k)); got != want {
		t.Errorf("BeautifyKey = %q, want %q", got, want)
	}
	v6 := c
	v6.Family, v6.Source, v6.Dest = AFINET6, netip.MustParseAddr("fd00:c7::1"), netip.MustParseAddr("fd00:c7::2")
	k6, err := v6.ByteKey(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := BeautifyKey(string(k6)); !strings.Contains(got, "src:[fd00:c7::1]:40000|dst:[fd00:c7::2]:443|f:1") {
		t.Errorf("IPv6 BeautifyKey = %q", got)
	}
	if len(k6) != len(k)+24 {
		t.Errorf("IPv6 key %d bytes, IPv4 %d: want 24 more (two 16- instead of 4-byte addresses)", len(k6), len(k))
	}
}

func TestByteKeyErrorsWithoutAddress(t *testing.T) {
	var buf bytes.Buffer
	c := sampleConn()
	c.Dest = netip.Addr{}
	if _, err := c.ByteKey(&buf); err == nil || !strings.Contains(err.Error(), "99/2") {
		t.Errorf("error %v, want one naming the connection", err)
	}
}

func TestBeautifyKeyRejectsGarbage(t *testing.T) {
	for _, k := range []string{"", "short", string(make([]byte, 12))} {
		if got := BeautifyKey(k); !strings.HasPrefix(got, "invalid key") {
			t.Errorf("BeautifyKey(%q) = %q, want an invalid-key message", k, got)
		}
	}
}

func TestConnectionSummary(t *testing.T) {
	c := sampleConn()
	got := c.String()
	want := "[TCP] [PID: 1234] [198.18.0.1:40000 ⇄ 198.18.0.2:443] (outgoing) 2.0 kB sent, 10 B received, 3 retransmits, RTT 250µs (± 40µs)"
	if got != want {
		t.Errorf("String() =\n%q, want\n%q", got, want)
	}
	named := ConnectionSummary(c, map[netip.Addr][]string{c.Dest: {"a.example", "b.example"}})
	if !strings.Contains(named, "a.example,b.example:443") {
		t.Errorf("names not used: %q", named)
	}
}

func TestPrerequisitesNameMissingBTF(t *testing.T) {
	nettest.RequireRoot(t) // the capability check comes first
	old := vmlinuxBTF
	vmlinuxBTF = "/nonexistent/vmlinux"
	defer func() { vmlinuxBTF = old }()
	_, err := checkPrerequisites(NewDefaultConfig())
	if err == nil || !strings.Contains(err.Error(), "CONFIG_DEBUG_INFO_BTF") || !strings.Contains(err.Error(), "/nonexistent/vmlinux") {
		t.Errorf("error %v, want one naming the path and CONFIG_DEBUG_INFO_BTF", err)
	}
}

func TestDirectionRules(t *testing.T) {
	a, b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	lo6 := netip.MustParseAddr("::1")
	for _, c := range []struct {
		src, dst   netip.Addr
		kernel     ConnectionDirection
		want       ConnectionDirection
		serverSide bool
	}{
		{a, b, OUTGOING, OUTGOING, false},
		{b, a, INCOMING, INCOMING, true},
		{lo6, lo6, INCOMING, LOCAL, true},
		{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), OUTGOING, LOCAL, false},
		{a, a, NONE, LOCAL, false}, // a socket talking to its own address
		{a, b, NONE, NONE, false},
	} {
		x := ConnectionStats{Source: c.src, Dest: c.dst, Direction: c.kernel, SPort: 1000, DPort: 80}
		x.classifyDirection()
		wantPort := uint16(80)
		if c.serverSide {
			wantPort = 1000
		}
		if x.Direction != c.want || x.ServerSide != c.serverSide || x.ServicePort() != wantPort {
			t.Errorf("%s→%s (%s): %s server side %v port %d, want %s %v %d", c.src, c.dst, c.kernel, x.Direction, x.ServerSide, x.ServicePort(), c.want, c.serverSide, wantPort)
		}
	}
}

func TestMarkIntraHost(t *testing.T) {
	a, b, far := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("192.0.2.9")
	conns := []ConnectionStats{
		{Source: a, SPort: 40000, Dest: b, DPort: 80, Type: TCP},                      // 0: its other end is 1
		{Source: b, SPort: 80, Dest: a, DPort: 40000, Type: TCP},                      // 1
		{Source: a, SPort: 40001, Dest: far, DPort: 80, Type: TCP},                    // 2: the peer is elsewhere
		{Source: a, SPort: 40000, Dest: b, DPort: 80, Type: UDP},                      // 3: same ports, other protocol
		{Source: netip.IPv4Unspecified(), SPort: 53, Dest: a, DPort: 5353, Type: UDP}, // 4: wildcard-bound server: its client (5) is found
		{Source: a, SPort: 5353, Dest: b, DPort: 53, Type: UDP},                       // 5: its client cannot be matched
	}
	markIntraHost(conns)
	for i, want := range []bool{true, true, false, false, true, false} {
		if conns[i].IntraHost != want {
			t.Errorf("connection %d: IntraHost %v, want %v", i, conns[i].IntraHost, want)
		}
	}
}

// filterConn gives the filters the local side (Source, SPort), the remote
// side (Dest, DPort) and the protocol, and the user-space filter check
// allocates nothing per connection.
func TestFilterConnSidesNoAlloc(t *testing.T) {
	c := sampleConn()
	fc := c.filterConn()
	if fc.Local != netip.AddrPortFrom(c.Source, c.SPort) || fc.Remote != netip.AddrPortFrom(c.Dest, c.DPort) || fc.Proto != filter.TCP {
		t.Errorf("filterConn = %+v", fc)
	}
	c.Type = UDP
	if c.filterConn().Proto != filter.UDP {
		t.Error("UDP not filter.UDP")
	}
	f, err := filter.NewConnectionFilters(nil, map[string][]string{"198.18.0.0/24": {"udp 53"}, "2001:db8::/32": {"*"}},
		nil, map[string][]string{"*": {"tcp 443", "udp 443"}})
	if err != nil {
		t.Fatal(err)
	}
	if !f.Traced(c.filterConn()) {
		t.Error("udp 443 not traced")
	}
	c.DPort = 53
	if f.Traced(c.filterConn()) {
		t.Error("udp 53 to 198.18.0.2 traced")
	}
	if n := testing.AllocsPerRun(100, func() { f.Traced(c.filterConn()) }); n != 0 {
		t.Errorf("%v allocations per connection", n)
	}
}
