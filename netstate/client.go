package netstate

import (
	"fmt"
	"strings"
	"time"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// client is what the state holds for one client (a scraper address, with
// its client_id if given).
type client[K comparable] struct {
	lastFetch time.Time
	// admitEpoch is the kernel time the client was admitted, before its
	// first snapshot: connections that left before it are not its own.
	admitEpoch uint64
	// firstEpoch is when the client's first snapshot ended; firstGen is
	// that snapshot's State.gen.
	firstEpoch, firstGen uint64
	// fresh is set from admission to the first scrape's step.
	fresh bool
	// reading is set while a scrape of the client reads: it does not
	// expire meanwhile.
	reading bool
	calls   uint64
	// lastGen is the state's gen at the client's previous scrape.
	lastGen uint64

	series map[K]*series // label set -> its series (or the overflow series)
	// byID caches series by the id of their label set in State.keys: a
	// step finds a live connection's series without hashing its label
	// set (the collector's are 104 bytes, strings included). An entry
	// holds while the id's generation does.
	byID     []idSeries
	list     []*series // the series of their own, in creation order
	overflow *series   // nil until a label set needs it
	// overflowTotal counts the connections counted into overflow, each
	// once.
	overflowTotal uint64
	// folded is the state's fold count at the client's previous scrape
	// (see State.addrs).
	folded uint64
}

// idSeries is a series cached under a label-set id, with the id's
// generation then.
type idSeries struct {
	ser *series
	gen uint32
}

// series is one client's counters of one label set: what left, folded,
// and (during a step) what the live connections contribute, less what
// the connections alive at the client's first scrape had counted then
// (offset: their traffic before the client is not its own).
type series struct {
	labels []string
	text   string // Labeler.Text of labels
	tcp    bool
	total  Counters
	live   Counters
	offset Counters
	open   uint64
	// zeroWindow are the open connections stalled on a zero window now;
	// zeroWindowSeen: some were once, and the gauge is exported from
	// then on (most label sets never see one).
	zeroWindow     uint64
	zeroWindowSeen bool
	// floored: its last value was floored (State.tel.statsResets counts
	// each time it starts).
	floored bool
}

// value is the series now: total + live - offset. It is never below 0
// while every connection's counters are monotonic, which the tracer keeps
// (a counter below would mean a counter that went down: floored at 0, and
// reset says so).
func (s *series) value(overflow bool) (v Series, reset bool) {
	v = Series{Labels: s.labels, Text: s.text, TCP: s.tcp, Overflow: overflow, Counters: s.total, Open: s.open,
		ZeroWindow: s.zeroWindow, ZeroWindowSeen: s.zeroWindowSeen}
	v.Counters.Add(&s.live)
	reset = v.Counters.sub(&s.offset)
	return v, reset
}

func (c *client[K]) overflowSeries(lab interface {
	Overflow() []string
	Text([]string) string
}) *series {
	if c.overflow == nil {
		c.overflow = &series{labels: lab.Overflow(), text: lab.Text(lab.Overflow())}
	}
	return c.overflow
}

// older says whether x, without an offset, is older than the client:
// opened before the client was admitted and gone before its first
// snapshot ended (so not in it). Its traffic is not the client's to
// count; its end is.
func (c *client[K]) older(x *tracer.ConnectionStats) bool {
	return x.StartEpoch < c.admitEpoch && (c.fresh || x.LastUpdateEpoch <= c.firstEpoch)
}

// leftAdd is what x, a connection that left (closed, or gone without a
// close) and not in c's offsets, adds to c's counters when folded:
// nothing if it left before c came (nil), its end if it is older than c
// (in end), else all of it (d: all(x), not copied: a Counters is 800
// bytes, and a fold goes to every client).
func (c *client[K]) leftAdd(x *tracer.ConnectionStats, d, end *Counters) *Counters {
	switch {
	case x.LastUpdateEpoch < c.admitEpoch:
		return nil
	case c.older(x):
		*end = ends(x)
		return end
	}
	return d
}

// oneShotGrace protects a client after its first scrape from the eviction
// of other scrapers' new clients, long enough for a Prometheus to come back
// (a scrape interval is at most 2 minutes in practice: staleness is 5).
const oneShotGrace = 2 * time.Minute

// clientHost is the scraper address of a client id ("client_id@address",
// or the address alone).
func clientHost(id string) string {
	if i := strings.LastIndexByte(id, '@'); i >= 0 {
		return id[i+1:]
	}
	return id
}

// perHost is how many clients one scraper address holds at most.
func (s *State[K]) perHost() int { return max(4, s.cfg.MaxClients/4) }

// makeRoom makes room for the new client id, if it can, by evicting a
// client that never came back after its first scrape (a Prometheus comes
// back every scrape interval; one-off requests, a new client_id each, do
// not): the oldest of the new client's own address when that address is at
// its share (perHost), else the oldest of any address past oneShotGrace.
// So one address cannot hold more than its share, nor evict another's new
// Prometheus before it could come back. Clients that came back are never
// evicted, only expired. Callers hold s.mu.
func (s *State[K]) makeRoom(id string, now time.Time) bool {
	host := clientHost(id)
	own := 0
	for oid := range s.clients {
		if clientHost(oid) == host {
			own++
		}
	}
	if own < s.perHost() && len(s.clients) < s.cfg.MaxClients {
		return true
	}
	var oldest string
	var c *client[K]
	for oid, o := range s.clients {
		mine := clientHost(oid) == host
		switch {
		case o.calls > 1, o.fresh:
			continue
		case own >= s.perHost() && !mine:
			continue
		case own < s.perHost() && now.Sub(o.lastFetch) < oneShotGrace:
			continue
		}
		if c == nil || o.lastFetch.Before(c.lastFetch) {
			oldest, c = oid, o
		}
	}
	if c == nil {
		return false
	}
	delete(s.clients, oldest)
	s.recheck = true // see State.missing
	s.tel.clientsEvicted++
	return true
}

// admit returns clientID's client, made if new. Callers hold s.mu.
func (s *State[K]) admit(clientID string, now time.Time) (*client[K], error) {
	if c := s.clients[clientID]; c != nil {
		return c, nil
	}
	if !s.makeRoom(clientID, now) {
		s.tel.clientsRejected++
		return nil, fmt.Errorf("%w: %d held, the limit (--tracer.max-clients; at most %d per scraper address), and none can make room: each came back after its first scrape, or is younger than %s",
			ErrTooManyClients, len(s.clients), s.perHost(), oneShotGrace)
	}
	c := &client[K]{
		folded:     s.tel.folded,
		fresh:      true,
		admitEpoch: s.src.KTime(),
		lastFetch:  now,
		series:     make(map[K]*series),
	}
	s.clients[clientID] = c
	return c, nil
}
