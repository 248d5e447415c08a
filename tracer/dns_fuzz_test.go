package tracer

import (
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzParseDNSAnswer: no input crashes the parser or the cache, and every
// payload is counted once, whatever it is.
func FuzzParseDNSAnswer(f *testing.F) {
	f.Add(dnsResponse(f, []dnsmessage.Question{question("a.test.", dnsmessage.TypeA)}, dnsmessage.RCodeSuccess,
		func(b *dnsmessage.Builder) error {
			return b.AResource(rrh("a.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, 0, 1}})
		}), false)
	f.Add([]byte{0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, truncated bool) {
		if ans, err := parseDNSAnswer(b); err == nil {
			for a, names := range ans {
				if !a.IsValid() || len(names) == 0 {
					t.Fatalf("answer %v: %v", a, names)
				}
			}
		}
		c := newDNSCache(4, 1<<20, time.Minute)
		c.handle(b, truncated, time.Now())
		st := c.getStats()
		if n := st[dnsDecoded] + st[dnsIgnored] + st[dnsMalformed] + st[dnsTruncated]; n != 1 {
			t.Fatalf("payload counted %d times: %v", n, st)
		}
	})
}
