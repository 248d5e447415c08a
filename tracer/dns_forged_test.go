package tracer

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/conntrace/conntrace_exporter/internal/dnstest"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// answerA is a DNS answer with transaction id id: name has address a.
func answerA(t *testing.T, id uint16, name string, a netip.Addr) []byte {
	t.Helper()
	return dnstest.ResponseID(t, id, []dnsmessage.Question{dnstest.Question(name, dnsmessage.TypeA)}, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) error {
		return b.AResource(dnstest.RR(name, dnsmessage.TypeA), dnsmessage.AResource{A: a.As4()})
	})
}

// Only an answer to a query this host sent is read: same socket, same
// server, same transaction id. Anyone who can send a datagram from port 53
// to a socket here cannot name addresses (issue 11.14: every datagram from
// port 53 was read).
func TestForgedDNSAnswerNotLearnt(t *testing.T) {
	nettest.RequireRoot(t)
	// DNS needs no TCP: on kernels that cannot trace it, without.
	tr := newTestTracer(t, func(c *Config) { c.CollectTCPConns = TCPPossible() == nil })
	p := nettest.NewPair(t)
	var cl, srv net.PacketConn
	if err := nettest.Do(p.Client, func() (err error) { cl, err = net.ListenPacket("udp4", p.Client4.String()+":0"); return }); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := nettest.Do(p.Server, func() (err error) { srv, err = net.ListenPacket("udp4", p.Server4.String()+":53"); return }); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	forged, real := netip.MustParseAddr("192.0.2.66"), netip.MustParseAddr("192.0.2.77")
	send := func(c net.PacketConn, msg []byte, to net.Addr) {
		t.Helper()
		if _, err := c.WriteTo(msg, to); err != nil {
			t.Fatal(err)
		}
	}
	// Unsolicited: no query at all.
	send(srv, answerA(t, 100, "forged.conntrace.test.", forged), cl.LocalAddr())
	// A query with id 5; answers with another id, and from another
	// server port, do not answer it.
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 5, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnstest.Question("real.conntrace.test.", dnsmessage.TypeA))
	q, _ := b.Finish()
	send(cl, q, srv.LocalAddr())
	send(srv, answerA(t, 6, "forged.conntrace.test.", forged), cl.LocalAddr())
	// The answer.
	send(srv, answerA(t, 5, "real.conntrace.test.", real), cl.LocalAddr())
	addrs := []netip.Addr{forged, real}
	deadline := time.Now().Add(3 * time.Second)
	for {
		tr.drainMu.Lock()
		tr.drainDNS()
		tr.drainMu.Unlock()
		names := tr.dns.Lookup(addrs, time.Now())
		if slices.Equal(names[real], []string{"real.conntrace.test"}) {
			if got := names[forged]; got != nil {
				t.Errorf("names of %s: %v, want none: no query asked for them", forged, got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("names %v, want %s named real.conntrace.test; stats %+v", names, real, tr.dns.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := tr.Stats().DNSUnsolicited; n != 2 {
		t.Errorf("unsolicited answers counted: %d, want 2", n)
	}
}

// A query that a NAT on this host sends elsewhere (Docker's 127.0.0.11, a
// mesh's DNS capture: here the client's port 53 goes to the server's
// 5353) still gets its answer read: the egress hook sees the query after
// the NAT, the socket before it (review of issue 11.14: matched on the
// server's address and port 53, every such answer was refused).
func TestDNSAnswerThroughNAT(t *testing.T) {
	nettest.RequireRoot(t)
	tr := newTestTracer(t, func(c *Config) { c.CollectTCPConns = TCPPossible() == nil })
	p := nettest.NewPair(t)
	nft(t, p.ClientName, `table ip conntrace_dns_nat {
	chain output {
		type nat hook output priority -100; policy accept;
		udp dport 53 dnat to 198.18.0.2:5353
	}
}`)
	named := netip.MustParseAddr("192.0.2.88")
	dnsServer(t, p, 5353, func(id uint16, _ dnsmessage.Question) []byte {
		return answerA(t, id, "natted.conntrace.test.", named)
	})
	c := dialUDP(t, p, netip.AddrPortFrom(p.Server4, 53)) // the NAT sends it to port 5353
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 9, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnstest.Question("natted.conntrace.test.", dnsmessage.TypeA))
	q, _ := b.Finish()
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 512)); err != nil {
		t.Fatalf("no answer through the NAT: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		tr.drainMu.Lock()
		tr.drainDNS()
		tr.drainMu.Unlock()
		names := tr.dns.Lookup([]netip.Addr{named}, time.Now())
		if slices.Equal(names[named], []string{"natted.conntrace.test"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("names %v, want %s named natted.conntrace.test; %d answers refused as unsolicited", names, named, tr.Stats().DNSUnsolicited)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
