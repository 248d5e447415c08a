package dns

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/conntrace/conntrace_exporter/internal/dnstest"
)

func TestParseDNSAnswerAAndAAAAWithCNAME(t *testing.T) {
	msg := dnstest.Response(t, []dnsmessage.Question{dnstest.Question("WWW.Example.test.", dnsmessage.TypeA)}, dnsmessage.RCodeSuccess,
		func(b *dnsmessage.Builder) error {
			if err := b.CNAMEResource(dnstest.RR("www.example.test.", dnsmessage.TypeCNAME), dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("edge.cdn.test.")}); err != nil {
				return err
			}
			if err := b.AResource(dnstest.RR("edge.cdn.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, 0, 9}}); err != nil {
				return err
			}
			return b.AAAAResource(dnstest.RR("edge.cdn.test.", dnsmessage.TypeAAAA), dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("fd00:c7::9").As16()})
		})
	ans, err := parseAnswer(msg)
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
	nx := dnstest.Response(t, []dnsmessage.Question{dnstest.Question("nope.test.", dnsmessage.TypeA)}, dnsmessage.RCodeNameError, nil)
	if _, err := parseAnswer(nx); err != errNotAnswer {
		t.Errorf("NXDOMAIN: %v, want errNotAnswer", err)
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1})
	b.StartQuestions()
	b.Question(dnstest.Question("q.test.", dnsmessage.TypeA))
	q, _ := b.Finish()
	if _, err := parseAnswer(q); err != errNotAnswer {
		t.Errorf("query: %v, want errNotAnswer", err)
	}
}

func TestDNSCacheCountsMalformedAndTruncated(t *testing.T) {
	c := NewCache(10, 1<<20, time.Minute)
	now := time.Now()
	good := dnstest.Response(t, []dnsmessage.Question{dnstest.Question("a.test.", dnsmessage.TypeA)}, dnsmessage.RCodeSuccess,
		func(b *dnsmessage.Builder) error {
			return b.AResource(dnstest.RR("a.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, 0, 1}})
		})
	c.Handle(good, false, now)
	c.Handle(good[:len(good)-3], true, now)  // cut by the kernel's 512-byte copy
	c.Handle(good[:len(good)-3], false, now) // cut, and not by us
	c.Handle([]byte{1, 2, 3}, false, now)
	st := c.Stats()
	if st.Decoded != 1 || st.Truncated != 1 || st.Malformed != 2 || st.Addrs != 1 {
		t.Errorf("stats %+v, want 1 decoded, 1 truncated, 2 malformed, 1 ip", st)
	}
	a := netip.MustParseAddr("198.18.0.1")
	names := c.Lookup([]netip.Addr{a}, now)
	if !slices.Equal(names[a], []string{"a.test"}) {
		t.Errorf("Lookup: %v", names)
	}
	if got := c.Lookup([]netip.Addr{a}, now.Add(2*time.Minute)); len(got) != 0 {
		t.Errorf("after the TTL: %v, want nothing", got)
	}
}

func TestDNSCacheBounded(t *testing.T) {
	c := NewCache(2, 1<<20, time.Minute)
	for i := 0; i < 5; i++ {
		msg := dnstest.Response(t, []dnsmessage.Question{dnstest.Question("a.test.", dnsmessage.TypeA)}, dnsmessage.RCodeSuccess,
			func(b *dnsmessage.Builder) error {
				return b.AResource(dnstest.RR("a.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, 0, byte(i)}})
			})
		c.Handle(msg, false, time.Now())
	}
	if st := c.Stats(); st.Addrs != 2 || st.CacheFull != 3 {
		t.Errorf("stats %+v, want 2 ips and 3 refused", st)
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
	c := NewCache(100000, budget, time.Minute)
	now := time.Now()
	long := func(i, j int) string {
		return fmt.Sprintf("%s.n%d-%d.test.", strings.Repeat("x", 60)+"."+strings.Repeat("y", 60)+"."+strings.Repeat("z", 60), i, j)
	}
	for i := range 200 {
		var qs []dnsmessage.Question
		for j := range 8 {
			qs = append(qs, dnstest.Question(long(i, j), dnsmessage.TypeA))
		}
		msg := dnstest.ResponseID(t, 1, qs, dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) error {
			for j := range 8 {
				if err := b.AResource(dnstest.RR(long(i, j), dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, byte(i >> 8), byte(i)}}); err != nil {
					return err
				}
			}
			return nil
		})
		c.Handle(msg, false, now)
	}
	st := c.Stats()
	if st.Bytes > budget || st.Bytes < budget/2 {
		t.Errorf("cache holds %d bytes, want at most the budget %d, and near it", st.Bytes, budget)
	}
	if st.CacheFull == 0 {
		t.Errorf("stats %+v: nothing counted as not kept", st)
	}
	c.Expire(now.Add(2 * time.Minute)) // the drain's sweep, no scrape
	if st := c.Stats(); st.Addrs != 0 || st.Bytes != 0 {
		t.Errorf("after the TTL: %d addresses, %d bytes held, want 0 0", st.Addrs, st.Bytes)
	}
}
