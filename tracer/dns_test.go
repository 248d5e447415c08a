package tracer

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// dnsResponse builds a DNS answer to questions qs with the given records.
func dnsResponse(t testing.TB, qs []dnsmessage.Question, rcode dnsmessage.RCode, build func(b *dnsmessage.Builder) error) []byte {
	t.Helper()
	return dnsResponseID(t, 7, qs, rcode, build)
}

// dnsServer answers, on the server's IPv4 address and port, each query
// with what answer gives for its id and question, until the test ends.
func dnsServer(t *testing.T, p *nettest.Pair, port int, answer func(id uint16, q dnsmessage.Question) []byte) {
	t.Helper()
	var srv net.PacketConn
	if err := nettest.Do(p.Server, func() (err error) {
		srv, err = net.ListenPacket("udp4", net.JoinHostPort(p.Server4.String(), fmt.Sprint(port)))
		return
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			var pq dnsmessage.Parser
			h, err := pq.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := pq.Question()
			if err != nil {
				continue
			}
			srv.WriteTo(answer(h.ID, q), from)
		}
	}()
}

// dnsResponseID is dnsResponse with the transaction id of its query.
func dnsResponseID(t testing.TB, id uint16, qs []dnsmessage.Question, rcode dnsmessage.RCode, build func(b *dnsmessage.Builder) error) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RCode: rcode})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.StartAnswers(); err != nil {
		t.Fatal(err)
	}
	if build != nil {
		if err := build(&b); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func rrh(name string, typ dnsmessage.Type) dnsmessage.ResourceHeader {
	return dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET, TTL: 60}
}

func question(name string, typ dnsmessage.Type) dnsmessage.Question {
	return dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}
}

func TestParseDNSAnswerAAndAAAAWithCNAME(t *testing.T) {
	msg := dnsResponse(t, []dnsmessage.Question{question("WWW.Example.test.", dnsmessage.TypeA)}, dnsmessage.RCodeSuccess,
		func(b *dnsmessage.Builder) error {
			if err := b.CNAMEResource(rrh("www.example.test.", dnsmessage.TypeCNAME), dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("edge.cdn.test.")}); err != nil {
				return err
			}
			if err := b.AResource(rrh("edge.cdn.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, 0, 9}}); err != nil {
				return err
			}
			return b.AAAAResource(rrh("edge.cdn.test.", dnsmessage.TypeAAAA), dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd00:c7::9").As16()})
		})
	ans, err := parseDNSAnswer(msg)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"edge.cdn.test", "www.example.test"}
	for _, a := range []string{"198.18.0.9", "fd00:c7::9"} {
		if got := ans[netip.MustParseAddr(a)]; !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", a, got, want)
		}
	}
}

func TestParseDNSAnswerIgnoresQueriesAndErrors(t *testing.T) {
	nx := dnsResponse(t, []dnsmessage.Question{question("nope.test.", dnsmessage.TypeA)}, dnsmessage.RCodeNameError, nil)
	if _, err := parseDNSAnswer(nx); err != errNotAnswer {
		t.Errorf("NXDOMAIN: %v, want errNotAnswer", err)
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1})
	b.StartQuestions()
	b.Question(question("q.test.", dnsmessage.TypeA))
	q, _ := b.Finish()
	if _, err := parseDNSAnswer(q); err != errNotAnswer {
		t.Errorf("query: %v, want errNotAnswer", err)
	}
}

func TestDNSCacheCountsMalformedAndTruncated(t *testing.T) {
	c := newDNSCache(10, 1<<20, time.Minute)
	now := time.Now()
	good := dnsResponse(t, []dnsmessage.Question{question("a.test.", dnsmessage.TypeA)}, dnsmessage.RCodeSuccess,
		func(b *dnsmessage.Builder) error {
			return b.AResource(rrh("a.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, 0, 1}})
		})
	c.handle(good, false, now)
	c.handle(good[:len(good)-3], true, now)  // cut by the kernel's 512-byte copy
	c.handle(good[:len(good)-3], false, now) // cut, and not by us
	c.handle([]byte{1, 2, 3}, false, now)
	st := c.getStats()
	if st[dnsDecoded] != 1 || st[dnsTruncated] != 1 || st[dnsMalformed] != 2 || st["ips"] != 1 {
		t.Errorf("stats %v, want 1 decoded, 1 truncated, 2 malformed, 1 ip", st)
	}
	a := netip.MustParseAddr("198.18.0.1")
	names := c.resolve([]ConnectionStats{{Dest: a}}, now)
	if !slices.Equal(names[a], []string{"a.test"}) {
		t.Errorf("resolve: %v", names)
	}
	if got := c.resolve([]ConnectionStats{{Dest: a}}, now.Add(2*time.Minute)); len(got) != 0 {
		t.Errorf("after the TTL: %v, want nothing", got)
	}
}

func TestDNSCacheBounded(t *testing.T) {
	c := newDNSCache(2, 1<<20, time.Minute)
	for i := 0; i < 5; i++ {
		msg := dnsResponse(t, []dnsmessage.Question{question("a.test.", dnsmessage.TypeA)}, dnsmessage.RCodeSuccess,
			func(b *dnsmessage.Builder) error {
				return b.AResource(rrh("a.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, 0, byte(i)}})
			})
		c.handle(msg, false, time.Now())
	}
	if st := c.getStats(); st["ips"] != 2 || st["cache_full"] != 3 {
		t.Errorf("stats %v, want 2 ips and 3 refused", st)
	}
}

// A DNS server in one namespace answers A and AAAA queries of a client in
// the other: the tracer maps both addresses to the name.
func TestReverseDNSFromAnswers(t *testing.T) {
	nettest.RequireRoot(t)
	// DNS needs no TCP: on kernels that cannot trace it, without.
	tr := newTestTracer(t, func(c *Config) { c.CollectTCPConns = TCPPossible() == nil })
	p := nettest.NewPair(t)
	dnsServer(t, p, 53, func(id uint16, q dnsmessage.Question) []byte {
		return dnsResponseID(t, id, []dnsmessage.Question{q}, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) error {
			if q.Type == dnsmessage.TypeAAAA {
				return b.AAAAResource(rrh(q.Name.String(), dnsmessage.TypeAAAA), dnsmessage.AAAAResource{AAAA: p.Server6.As16()})
			}
			return b.AResource(rrh(q.Name.String(), dnsmessage.TypeA), dnsmessage.AResource{A: p.Server4.As4()})
		})
	})
	c := dialUDP(t, p, netip.AddrPortFrom(p.Server4, 53))
	for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 3, RecursionDesired: true})
		b.StartQuestions()
		b.Question(question("svc.conntrace.test.", typ))
		q, _ := b.Finish()
		c.Write(q)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 512)); err != nil {
			t.Fatalf("no answer to %s: %v", typ, err)
		}
	}
	// Connections to both addresses, so that Resolve has them to name.
	conns := []ConnectionStats{{Dest: p.Server4}, {Dest: p.Server6}}
	deadline := time.Now().Add(3 * time.Second)
	for {
		tr.mu.Lock()
		tr.drainDNS()
		tr.mu.Unlock()
		names := tr.ReverseDNS().Resolve(conns)
		if slices.Equal(names[p.Server4], []string{"svc.conntrace.test"}) && slices.Equal(names[p.Server6], []string{"svc.conntrace.test"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("names %v, want both addresses named svc.conntrace.test; stats %v", names, tr.ReverseDNS().GetStats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And through a client's view: the UDP flow to the server is named.
	o, err := tr.GetActiveConnections("dns")
	if err != nil {
		t.Fatal(err)
	}
	if got := o.DNS[p.Server4]; !slices.Equal(got, []string{"svc.conntrace.test"}) {
		t.Errorf("view's names for %s: %v", p.Server4, got)
	}
}

// DNS to a loopback resolver is left out unless CollectLocalDNS, as the
// seed did; other loopback UDP is reported.
func TestCollectLocalDNS(t *testing.T) {
	for _, collect := range []bool{false, true} {
		tr := newTestTracer(t, func(c *Config) { c.CollectLocalDNS = collect })
		p := nettest.NewPair(t)
		var srv, cl net.PacketConn
		if err := nettest.Do(p.Client, func() (err error) {
			if srv, err = net.ListenPacket("udp4", "127.0.0.1:53"); err != nil {
				return err
			}
			cl, err = net.ListenPacket("udp4", "127.0.0.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		cl.WriteTo(make([]byte, 33), srv.LocalAddr())
		srv.ReadFrom(make([]byte, 64))
		lo := netip.MustParseAddr("127.0.0.1")
		var dns int
		for _, c := range connsTo(t, tr, func(c *ConnectionStats) bool { return c.Type == UDP && c.Dest == lo }) {
			if c.DPort == 53 || c.SPort == 53 {
				dns++
			}
		}
		if want := map[bool]int{false: 0, true: 2}[collect]; dns != want {
			t.Errorf("CollectLocalDNS=%v: %d ends of local DNS reported, want %d", collect, dns, want)
		}
		srv.Close()
		cl.Close()
	}
}

// The cache is bounded in bytes, not only in addresses: answers full of
// long names (hostile ones: 3 answers can give an address 32 names of 253
// bytes) fill the byte budget and no more, counted; entries expire by the
// drain's clock, not only when a scrape resolves (issue 11.14: 100,000
// addresses of 32 long names held about 840 MiB, and only a scrape
// expired them).
func TestDNSCacheBoundedInBytes(t *testing.T) {
	const budget = 64 << 10
	c := newDNSCache(100000, budget, time.Minute)
	now := time.Now()
	long := func(i, j int) string {
		return fmt.Sprintf("%s.n%d-%d.test.", strings.Repeat("x", 60)+"."+strings.Repeat("y", 60)+"."+strings.Repeat("z", 60), i, j)
	}
	for i := range 200 {
		var qs []dnsmessage.Question
		for j := range 8 {
			qs = append(qs, question(long(i, j), dnsmessage.TypeA))
		}
		msg := dnsResponseID(t, 1, qs, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) error {
			for j := range 8 {
				if err := b.AResource(rrh(long(i, j), dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, byte(i >> 8), byte(i)}}); err != nil {
					return err
				}
			}
			return nil
		})
		c.handle(msg, false, now)
	}
	st := c.getStats()
	if st["bytes"] > budget || st["bytes"] < budget/2 {
		t.Errorf("cache holds %d bytes, want at most the budget %d, and near it", st["bytes"], budget)
	}
	if st[dnsCacheFull] == 0 {
		t.Errorf("stats %v: nothing counted as not kept", st)
	}
	c.expire(now.Add(2 * time.Minute)) // the drain's sweep, no scrape
	if st := c.getStats(); st["ips"] != 0 || st["bytes"] != 0 {
		t.Errorf("after the TTL: %d addresses, %d bytes held, want 0 0", st["ips"], st["bytes"])
	}
}
