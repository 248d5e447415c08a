package tracer

import (
	"errors"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/go-kit/log/level"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// The kernel side of reverse DNS: the BPF programs copy the answers to this
// host's queries into the dns_events ring buffer; drainDNS decodes those
// records and hands their payloads to the cache (package dns), which parses
// them and keeps the names.

// drainDNS reads the DNS answers in their ring buffer into the cache.
// Callers hold drainMu.
func (t *Tracer) drainDNS() {
	if t.dnsRd == nil {
		return
	}
	t.dnsRd.SetDeadline(time.Unix(1, 0))
	now := time.Now()
	for {
		if err := t.dnsRd.ReadInto(&t.drainRec); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				level.Warn(t.logger).Log("msg", "reading the DNS ring buffer", "err", err)
			}
			return
		}
		var ev bpf.ConntraceDnsEvent
		if len(t.drainRec.RawSample) < int(unsafe.Sizeof(ev)) {
			t.decode.Add(1)
			continue
		}
		ev = *(*bpf.ConntraceDnsEvent)(unsafe.Pointer(&t.drainRec.RawSample[0]))
		n := min(int(ev.Len), len(ev.Data))
		t.dns.Handle(ev.Data[:n], ev.Truncated != 0, now)
	}
}

// Names returns the names DNS answers on this host gave addrs (nil without
// DNSInspection): the seed's ReverseDNS, whose cache is a dns.Cache.
func (t *Tracer) Names(addrs []netip.Addr) map[netip.Addr][]string {
	if t.dns == nil {
		return nil
	}
	return t.dns.Lookup(addrs, time.Now())
}
