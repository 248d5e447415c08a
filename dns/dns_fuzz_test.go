package dns

import (
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/conntrace/conntrace_exporter/internal/dnstest"
)

// FuzzParseDNSAnswer: no input crashes the parser or the cache, and every
// payload is counted once, whatever it is.
func FuzzParseDNSAnswer(f *testing.F) {
	f.Add(dnstest.Response(f, []dnsmessage.Question{dnstest.Question("a.test.", dnsmessage.TypeA)}, dnsmessage.RCodeSuccess,
		func(b *dnsmessage.Builder) error {
			return b.AResource(dnstest.RR("a.test.", dnsmessage.TypeA), dnsmessage.AResource{A: [4]byte{198, 18, 0, 1}})
		}), false)
	f.Add([]byte{0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, truncated bool) {
		if ans, err := parseAnswer(b); err == nil {
			for a, names := range ans {
				if !a.IsValid() || len(names) == 0 {
					t.Fatalf("answer %v: %v", a, names)
				}
			}
		}
		c := NewCache(4, 1<<20, time.Minute)
		c.Handle(b, truncated, time.Now())
		st := c.Stats()
		if n := st.Decoded + st.Ignored + st.Malformed + st.Truncated; n != 1 {
			t.Fatalf("payload counted %d times: %+v", n, st)
		}
	})
}
