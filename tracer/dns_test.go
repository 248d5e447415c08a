package tracer

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/conntrace/conntrace_exporter/internal/dnstest"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

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

// A DNS server in one namespace answers A and AAAA queries of a client in
// the other: the tracer maps both addresses to the name.
func TestReverseDNSFromAnswers(t *testing.T) {
	nettest.RequireRoot(t)
	// DNS needs no TCP: on kernels that cannot trace it, without.
	tr := newTestTracer(t, func(c *Config) { c.CollectTCPConns = TCPPossible() == nil })
	p := nettest.NewPair(t)
	dnsServer(t, p, 53, func(id uint16, q dnsmessage.Question) []byte {
		return dnstest.ResponseID(t, id, []dnsmessage.Question{q}, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) error {
			if q.Type == dnsmessage.TypeAAAA {
				return b.AAAAResource(dnstest.RR(q.Name.String(), dnsmessage.TypeAAAA), dnsmessage.AAAAResource{AAAA: p.Server6.As16()})
			}
			return b.AResource(dnstest.RR(q.Name.String(), dnsmessage.TypeA), dnsmessage.AResource{A: p.Server4.As4()})
		})
	})
	c := dialUDP(t, p, netip.AddrPortFrom(p.Server4, 53))
	for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 3, RecursionDesired: true})
		b.StartQuestions()
		b.Question(dnstest.Question("svc.conntrace.test.", typ))
		q, _ := b.Finish()
		c.Write(q)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 512)); err != nil {
			t.Fatalf("no answer to %s: %v", typ, err)
		}
	}
	// Both addresses, for the cache to name.
	addrs := []netip.Addr{p.Server4, p.Server6}
	deadline := time.Now().Add(3 * time.Second)
	for {
		tr.drainMu.Lock()
		tr.drainDNS()
		tr.drainMu.Unlock()
		names := tr.dns.Lookup(addrs, time.Now())
		if slices.Equal(names[p.Server4], []string{"svc.conntrace.test"}) && slices.Equal(names[p.Server6], []string{"svc.conntrace.test"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("names %v, want both addresses named svc.conntrace.test; stats %+v", names, tr.dns.Stats())
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
