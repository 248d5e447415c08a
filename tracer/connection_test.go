package tracer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
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
		RTT:       250, HandshakeMicros: 40,
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

// DebugKey says what the seed's binary key held, as BeautifyKey read it
// back from ByteKey (kept here as its oracle).
func TestDebugKeyIsBeautifiedByteKey(t *testing.T) {
	var buf bytes.Buffer
	v6 := sampleConn()
	v6.Family, v6.Source, v6.Dest = AFINET6, netip.MustParseAddr("fd00:c7::1"), netip.MustParseAddr("fd00:c7::2")
	mapped := sampleConn()
	mapped.Source, mapped.Dest = netip.MustParseAddr("::ffff:198.18.0.1"), netip.MustParseAddr("::ffff:198.18.0.2")
	udp := sampleConn()
	udp.Type, udp.Direction = UDP, NONE
	for _, c := range []ConnectionStats{sampleConn(), v6, mapped, udp} {
		k, err := c.ByteKey(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.DebugKey(), BeautifyKey(string(k)); got != want {
			t.Errorf("DebugKey = %q, want %q", got, want)
		}
	}
	if got, want := sampleConn().DebugKey(), "p:1234|src:198.18.0.1:40000|dst:198.18.0.2:443|f:0|t:0|netns:4026531840|cookie:99/2"; got != want {
		t.Errorf("DebugKey = %q, want %q", got, want)
	}
	c := sampleConn()
	c.Dest = netip.Addr{}
	if got := c.DebugKey(); !strings.Contains(got, "cookie:99/2") {
		t.Errorf("DebugKey without a remote address = %q, want it to name the connection", got)
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
	want := "[TCP] [PID: 1234] [198.18.0.1:40000 ⇄ 198.18.0.2:443] (outgoing) 2.0 kB sent, 10 B received, 3 retransmits, RTT 250µs, handshake 40µs"
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
		// 6: its peer's address is 7's source in its IPv4-mapped IPv6 form,
		// another address (an IPv6 socket's end is IPv4 when it is).
		{Source: a, SPort: 40002, Dest: netip.AddrFrom16(b.As16()), DPort: 81, Type: TCP},
		{Source: b, SPort: 81, Dest: far, DPort: 40002, Type: TCP}, // 7
	}
	markIntraHost(conns)
	for i, want := range []bool{true, true, false, false, true, false, false, false} {
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

// ByteKey returns the seed's binary key of the connection:
//
//	32b PID | 16b SPORT | 16b DPORT | 4b family | 4b type | src addr | dst addr
//
// followed by what the seed lacked and this tracer keys on: 32b netns,
// 64b socket cookie and 32b generation. Only debug output uses it; the
// state is keyed by ConnKey.
func (c ConnectionStats) ByteKey(buf *bytes.Buffer) ([]byte, error) {
	buf.Reset()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(c.Pid)<<32|uint64(c.SPort)<<16|uint64(c.DPort))
	buf.Write(b[:])
	buf.WriteByte(byte(c.Family)<<4 | byte(c.Type))
	if !c.Source.IsValid() || !c.Dest.IsValid() {
		return nil, fmt.Errorf("connection %s has no address", c.Key)
	}
	if c.Family == AFINET {
		s, d := c.Source.Unmap().As4(), c.Dest.Unmap().As4()
		buf.Write(s[:])
		buf.Write(d[:])
	} else {
		s, d := c.Source.As16(), c.Dest.As16()
		buf.Write(s[:])
		buf.Write(d[:])
	}
	binary.LittleEndian.PutUint32(b[:4], c.NetNS)
	buf.Write(b[:4])
	binary.LittleEndian.PutUint64(b[:], c.Key.Cookie)
	buf.Write(b[:])
	binary.LittleEndian.PutUint32(b[:4], c.Key.Generation)
	buf.Write(b[:4])
	return buf.Bytes(), nil
}

// BeautifyKey returns a human-readable form of a ByteKey, for debug output.
func BeautifyKey(key string) string {
	k := []byte(key)
	if len(k) < 9 {
		return fmt.Sprintf("invalid key %x: %d bytes, want at least 9", k, len(k))
	}
	head := binary.LittleEndian.Uint64(k[:8])
	pid, sport, dport := uint32(head>>32), uint16(head>>16), uint16(head)
	family, typ := ConnectionFamily(k[8]>>4), ConnectionType(k[8]&0xf)
	alen := 4
	if family == AFINET6 {
		alen = 16
	}
	rest := k[9:]
	if len(rest) != 2*alen+16 {
		return fmt.Sprintf("invalid key %x: %d address and id bytes, want %d", k, len(rest), 2*alen+16)
	}
	src, _ := netip.AddrFromSlice(rest[:alen])
	dst, _ := netip.AddrFromSlice(rest[alen : 2*alen])
	rest = rest[2*alen:]
	netns := binary.LittleEndian.Uint32(rest[:4])
	cookie := binary.LittleEndian.Uint64(rest[4:12])
	gen := binary.LittleEndian.Uint32(rest[12:16])
	return fmt.Sprintf("p:%d|src:%s|dst:%s|f:%d|t:%d|netns:%d|cookie:%d/%d",
		pid, netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), family, typ, netns, cookie, gen)
}

// Test helpers and oracles: production calls markIntraHostWith.

// markIntraHost sets IntraHost on the connections whose other end is in
// conns too: both ends traced on this host. A UDP server socket bound to the
// unspecified address has no address to match, so its clients' flows are
// not marked (a port alone could be any host's).
func markIntraHost(conns []ConnectionStats) {
	refs := make([]*ConnectionStats, len(conns))
	for i := range conns {
		refs[i] = &conns[i]
	}
	markIntraHostWith(refs, nil)
}

// The set of ends holds no pointer (the collector does not scan it) and
// stays small.
func TestEndpointKeyHasNoPointer(t *testing.T) {
	ty := reflect.TypeFor[endpointKey]()
	for i := range ty.NumField() {
		switch f := ty.Field(i); f.Type.Kind() {
		case reflect.Array, reflect.Uint16, reflect.Uint8, reflect.Bool:
		default:
			t.Errorf("endpointKey.%s is a %s", f.Name, f.Type)
		}
	}
	if n := ty.Size(); n > 20 {
		t.Errorf("endpointKey is %d bytes, want at most 20", n)
	}
}
