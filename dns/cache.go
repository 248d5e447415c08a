package dns

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Stats are a Cache's counters: what became of the payloads it was given
// (each counted once, in Decoded, Malformed, Truncated or Ignored), what
// it did not keep or forgot, and what it holds.
type Stats struct {
	Decoded   uint64 // answers read
	Malformed uint64 // not a DNS message that can be read
	Truncated uint64 // longer than the copy (the kernel's 512 bytes), and unreadable without the rest
	Ignored   uint64 // a query, an error answer, or no A/AAAA record (errNotAnswer)
	CacheFull uint64 // an address or a name not kept: the cache was full
	Expired   uint64 // addresses forgotten, their TTL past
	Addrs     int    // addresses held
	Bytes     int    // bytes held, as the cache counts them
}

// Cache is the reverse DNS cache: the names DNS answers gave each
// address. It is bounded in addresses, in names per address
// (maxNamesPerAddr) and in bytes; an entry expires ttl after it was last
// answered or looked up, whether or not anyone looks (Expire). It is safe
// for concurrent use.
type Cache struct {
	mu       sync.Mutex
	ttl      time.Duration
	max      int
	maxBytes int
	bytes    int // held, as counted by entryBytes and nameBytes
	entries  map[netip.Addr]*entry
	stats    Stats
}

// What an entry and a name cost, roughly: the map slot, the entry and its
// slice; the string header and the bytes.
const entryBytes = 96

func nameBytes(n string) int { return 16 + len(n) }

type entry struct {
	names   []string
	expires time.Time
}

// NewCache returns an empty cache of at most maxAddrs addresses and
// maxBytes bytes, whose entries live ttl.
func NewCache(maxAddrs, maxBytes int, ttl time.Duration) *Cache {
	return &Cache{ttl: ttl, max: maxAddrs, maxBytes: maxBytes, entries: map[netip.Addr]*entry{}}
}

// Handle learns from one DNS payload (parseAnswer, then Add) and counts
// what it was; truncated says only its first bytes were copied.
func (c *Cache) Handle(payload []byte, truncated bool, now time.Time) {
	ans, err := parseAnswer(payload)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.stats.Decoded++
	case errors.Is(err, errNotAnswer):
		c.stats.Ignored++
		return
	case truncated:
		c.stats.Truncated++
		return
	default:
		c.stats.Malformed++
		return
	}
	c.addLocked(ans, now)
}

// Add keeps the names of ans, as far as the bounds allow (what does not
// fit is counted in CacheFull); each address of ans lives ttl from now.
func (c *Cache) Add(ans Answer, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addLocked(ans, now)
}

func (c *Cache) addLocked(ans Answer, now time.Time) {
	for a, names := range ans {
		e := c.entries[a]
		if e == nil {
			if len(c.entries) >= c.max || c.bytes+entryBytes > c.maxBytes {
				c.stats.CacheFull++
				continue
			}
			e = &entry{}
			c.entries[a] = e
			c.bytes += entryBytes
		}
		for _, n := range names {
			if slices.Contains(e.names, n) || len(e.names) >= maxNamesPerAddr {
				continue
			}
			if c.bytes+nameBytes(n) > c.maxBytes {
				c.stats.CacheFull++
				break
			}
			e.names = append(e.names, n)
			c.bytes += nameBytes(n)
		}
		slices.Sort(e.names)
		e.expires = now.Add(c.ttl)
	}
}

// Expire forgets the entries whose time is past.
func (c *Cache) Expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(now)
}

func (c *Cache) expireLocked(now time.Time) {
	for a, e := range c.entries {
		if now.After(e.expires) {
			c.drop(a, e)
			c.stats.Expired++
		}
	}
}

func (c *Cache) drop(a netip.Addr, e *entry) {
	delete(c.entries, a)
	c.bytes -= entryBytes
	for _, n := range e.names {
		c.bytes -= nameBytes(n)
	}
}

// Lookup returns the names of addrs (those it has: an address without
// names is not in the map), after expiring what is past; a lookup keeps
// an entry alive another ttl.
func (c *Cache) Lookup(addrs []netip.Addr, now time.Time) map[netip.Addr][]string {
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

// Stats returns the counters and what the cache holds now.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Addrs = len(c.entries)
	s.Bytes = c.bytes
	return s
}
