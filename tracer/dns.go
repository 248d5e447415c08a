package tracer

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// ReverseDNS maps addresses to the names DNS answers on this host gave them.
type ReverseDNS interface {
	// Resolve returns the names of the remote addresses of conns.
	Resolve(conns []ConnectionStats) map[netip.Addr][]string
	GetStats() map[string]int64
	Close()
}

// DNS answer outcomes, for GetStats and conntrace_lost_total.
const (
	dnsDecoded   = "decoded"
	dnsMalformed = "malformed"  // not a DNS message we can read
	dnsTruncated = "truncated"  // longer than the kernel copied (512 bytes), and unreadable
	dnsIgnored   = "ignored"    // a query, an error answer, or no A/AAAA record
	dnsCacheFull = "cache_full" // an address or name not kept: the cache is full
)

const maxNamesPerAddr = 32

// dnsAnswer is what one DNS answer says: each address, the names it
// answers for (the owner of the A/AAAA record and every question name
// whose CNAME chain leads to it).
type dnsAnswer map[netip.Addr][]string

var errNotAnswer = errors.New("not a successful answer")

// parseDNSAnswer reads a DNS response (UDP payload). It never panics on any
// input; errors say why nothing was learnt.
func parseDNSAnswer(b []byte) (dnsAnswer, error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return nil, err
	}
	if !h.Response || h.RCode != dnsmessage.RCodeSuccess {
		return nil, errNotAnswer
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, err
	}
	cname := map[string]string{}
	owners := map[netip.Addr][]string{}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, err
		}
		owner := dnsName(rh.Name)
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return nil, err
			}
			a := netip.AddrFrom4(r.A)
			owners[a] = append(owners[a], owner)
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return nil, err
			}
			a := netip.AddrFrom16(r.AAAA).Unmap()
			owners[a] = append(owners[a], owner)
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return nil, err
			}
			cname[owner] = dnsName(r.CNAME)
		default:
			if err := p.SkipAnswer(); err != nil {
				return nil, err
			}
		}
	}
	if len(owners) == 0 {
		return nil, errNotAnswer
	}
	ans := dnsAnswer{}
	for a, os := range owners {
		names := slices.Clone(os)
		for _, q := range qs {
			n := dnsName(q.Name)
			for hop := 0; hop < 8 && n != ""; hop++ { // CNAME chains, bounded
				if slices.Contains(os, n) {
					names = append(names, dnsName(q.Name))
					break
				}
				n = cname[n]
			}
		}
		slices.Sort(names)
		ans[a] = slices.Compact(names)
	}
	return ans, nil
}

func dnsName(n dnsmessage.Name) string {
	return strings.ToLower(strings.TrimSuffix(n.String(), "."))
}

// dnsCache is the reverse DNS cache: bounded in addresses, in names per
// address and in bytes; an entry expires ttl after it was last answered or
// resolved, whether or not anyone scrapes (the drain expires it too).
type dnsCache struct {
	mu       sync.Mutex
	ttl      time.Duration
	max      int
	maxBytes int
	bytes    int // held, as counted by entryBytes and nameBytes
	entries  map[netip.Addr]*dnsEntry
	stats    map[string]int64
}

// What an entry and a name cost, roughly: the map slot, the entry and its
// slice; the string header and the bytes.
const dnsEntryBytes = 96

func dnsNameBytes(n string) int { return 16 + len(n) }

type dnsEntry struct {
	names   []string
	expires time.Time
}

func newDNSCache(max, maxBytes int, ttl time.Duration) *dnsCache {
	return &dnsCache{ttl: ttl, max: max, maxBytes: maxBytes, entries: map[netip.Addr]*dnsEntry{}, stats: map[string]int64{}}
}

// handle learns from one DNS payload; truncated says the kernel copied only
// its first bytes.
func (c *dnsCache) handle(b []byte, truncated bool, now time.Time) {
	ans, err := parseDNSAnswer(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.stats[dnsDecoded]++
	case errors.Is(err, errNotAnswer):
		c.stats[dnsIgnored]++
		return
	case truncated:
		c.stats[dnsTruncated]++
		return
	default:
		c.stats[dnsMalformed]++
		return
	}
	for a, names := range ans {
		e := c.entries[a]
		if e == nil {
			if len(c.entries) >= c.max || c.bytes+dnsEntryBytes > c.maxBytes {
				c.stats[dnsCacheFull]++
				continue
			}
			e = &dnsEntry{}
			c.entries[a] = e
			c.bytes += dnsEntryBytes
		}
		for _, n := range names {
			if slices.Contains(e.names, n) || len(e.names) >= maxNamesPerAddr {
				continue
			}
			if c.bytes+dnsNameBytes(n) > c.maxBytes {
				c.stats[dnsCacheFull]++
				break
			}
			e.names = append(e.names, n)
			c.bytes += dnsNameBytes(n)
		}
		slices.Sort(e.names)
		e.expires = now.Add(c.ttl)
	}
}

// expire forgets the entries past their time.
func (c *dnsCache) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(now)
}

func (c *dnsCache) expireLocked(now time.Time) {
	for a, e := range c.entries {
		if now.After(e.expires) {
			c.drop(a, e)
			c.stats["expired"]++
		}
	}
}

func (c *dnsCache) drop(a netip.Addr, e *dnsEntry) {
	delete(c.entries, a)
	c.bytes -= dnsEntryBytes
	for _, n := range e.names {
		c.bytes -= dnsNameBytes(n)
	}
}

// resolve returns the names of the connections' remote addresses.
func (c *dnsCache) resolve(conns []ConnectionStats, now time.Time) map[netip.Addr][]string {
	addrs := make([]netip.Addr, len(conns))
	for i := range conns {
		addrs[i] = conns[i].NATRemote()
	}
	return c.names(addrs, now)
}

// names returns the names of addrs; a lookup keeps an entry alive.
func (c *dnsCache) names(addrs []netip.Addr, now time.Time) map[netip.Addr][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(now)
	out := map[netip.Addr][]string{}
	for _, a := range addrs {
		if _, done := out[a]; done {
			continue
		}
		if e := c.entries[a]; e != nil {
			e.expires = now.Add(c.ttl)
			out[a] = slices.Clone(e.names)
		}
	}
	return out
}

func (c *dnsCache) getStats() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := make(map[string]int64, len(c.stats)+1)
	for k, v := range c.stats {
		s[k] = v
	}
	s["ips"] = int64(len(c.entries))
	s["bytes"] = int64(c.bytes)
	return s
}

// Resolve implements ReverseDNS.
func (c *dnsCache) Resolve(conns []ConnectionStats) map[netip.Addr][]string {
	return c.resolve(conns, time.Now())
}

// GetStats implements ReverseDNS: answers decoded, malformed, truncated and
// ignored, addresses held, entries expired, answers refused by a full cache.
func (c *dnsCache) GetStats() map[string]int64 { return c.getStats() }

// Close implements ReverseDNS; the tracer owns the kernel side.
func (c *dnsCache) Close() {}
