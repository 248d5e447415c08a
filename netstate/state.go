// Package netstate is the seed's NetworkState: it turns what the tracer
// reports (a snapshot of the live connections at each scrape, and the
// stream of connections that left: closed, or timed out) into each
// client's cumulative counters, one series per label set.
//
// Nothing per connection is kept per client: a connection that leaves is
// folded, when the tracer drains it, into the series of every client, and
// the connections alive at a client's first scrape are counted then into
// their series' offset. A series' value at a scrape is what was folded into
// it, plus what its live connections count now, less its offset, so memory
// per client is O(its series), and the state shared by the clients is
// O(live connections).
//
// Each client sees each connection's traffic exactly once, from its first
// scrape on, however the scrapes of different clients interleave.
package netstate

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// ErrTooManyClients is returned (wrapped, with the limit in the message) by
// Scrape for a new client when MaxClients clients are held and none can
// make room.
var ErrTooManyClients = errors.New("too many clients")

// Source is what the state reads: the tracer.
type Source interface {
	// Snapshot reads the live connections (Monotonic filled). The
	// connections that leave meanwhile are given to State.Closed, from
	// the tracer's drain, concurrently.
	Snapshot() (*tracer.Snapshot, error)
	// KTime is the kernel's CLOCK_MONOTONIC in ns, the clock of the
	// connections' epochs.
	KTime() uint64
}

// Labeler maps a connection to the label set it is counted under, and a
// label set to its label values. Key runs once per connection (the label
// set of a connection is fixed when the state first sees it).
type Labeler[K comparable] interface {
	Key(c *tracer.ConnectionStats) K
	Values(k K) []string
	// Overflow is the label values of the overflow series.
	Overflow() []string
	// Text renders label values once per series, for the renderer's own
	// use (the collector: the text format's label pairs); the state only
	// keeps it (Series.Text).
	Text(values []string) string
}

// Config bounds the state.
type Config struct {
	// MaxClients bounds the clients held; a new one beyond it evicts a
	// client that never came back after its first scrape, if any (see
	// makeRoom), else is refused.
	MaxClients int
	// ClientExpiry forgets a client not scraped for this long (0: never).
	ClientExpiry time.Duration
	// MaxSeries bounds the label sets per client (0: no bound); beyond
	// it, connections count into one overflow series.
	MaxSeries int
	// Now is the clock of client expiry (default time.Now).
	Now func() time.Time
	// MaxAddrs bounds the remote addresses of the connections folded
	// that some client has not scraped since, kept (once for all
	// clients) for the names of the views (View.Addrs).
	MaxAddrs int
}

// Lost reasons the state counts (see tracer.LostReasons).
const (
	LostClientStateFull = tracer.LostClientStateFull
	LostClientRejected  = tracer.LostClientRejected
	LostClientEvicted   = tracer.LostClientEvicted
)

// tomb is a connection folded while a snapshot was read: its counters,
// and when it left.
type tomb[K comparable] struct {
	d   Counters
	at  uint64
	key K
}

// liveConn is what the state shares among clients about a live connection.
type liveConn struct {
	// key is the id of its label set in State.keys.
	key uint32
	// first is the scrape (State.gen) that first saw it; seen the last;
	// leaving the first that saw it leaving (closed, its fold waiting:
	// Snapshot.Leaving), 0 before. A client's first scrape counted into
	// its offsets the connections it saw, but the leaving ones
	// (client.offsetted).
	first, seen, leaving uint64
}

type telemetry struct {
	// statsResets counts series found below their offset (floored, once
	// until they are above it again): a connection's counter went down, or
	// one in an offset is missing (see missing). The tracer keeps counters
	// monotonic and reports every connection until it leaves: none should
	// be.
	statsResets uint64
	// missing counts the connections that went missing from a snapshot
	// without leaving (the tracer reports every connection until it
	// folds it: none should).
	missing         uint64
	clientsRejected uint64 // LostClientRejected
	clientsEvicted  uint64 // LostClientEvicted
	folded          uint64
	addrsDropped    uint64 // addresses of folded connections dropped from addrs
}

// State is the per-client state of every client. Its methods are safe for
// concurrent use; Closed never waits for a snapshot.
type State[K comparable] struct {
	src Source
	lab Labeler[K]
	cfg Config

	// readMu serialises the scrapes' snapshots and their steps, so that
	// the steps see the snapshots in order.
	readMu sync.Mutex

	mu      sync.Mutex
	clients map[string]*client[K]
	live    map[tracer.ConnKey]liveConn
	// end is leftAdd's scratch for a connection's end (under mu): a fold
	// hands every client the connection's own counters, not a copy of
	// them; only an older connection's end is built here.
	end  Counters
	keys keyTable[K] // the label sets of live
	// reading is set while a snapshot is read: the connections folded
	// meanwhile may be in it, and are remembered in tombs (their folded
	// counters), so that its step skips them.
	reading bool
	tombs   map[tracer.ConnKey]tomb[K]
	// counted is observe's array, reused from one scrape to the next (8 MB
	// at 200,000 connections), emptied after each step, and dropped when
	// four times what the step used.
	counted []countedConn
	gen     uint64 // scrapes stepped
	// missing is how many entries of live are missing from the last
	// snapshot, kept because some client's offsets hold them: their fold,
	// or their return, cancels what the offsets hold (deleted, the
	// offset stayed in its series for good). recheck: a client left
	// since, whose offsets may have been the last to hold some.
	missing int
	recheck bool
	// gaps holds, for the entries kept while missing that came back, the
	// snapshots they were missing from (offsetted).
	gaps map[tracer.ConnKey][]genRange
	tel  telemetry
	// addrs holds the remote addresses of the connections folded that
	// some client has not scraped since, with the number of the last
	// fold (tel.folded) of each: at most MaxAddrs, for the names of the
	// clients' views (View.Addrs).
	addrs map[netip.Addr]uint64
	// expired is when Closed last expired clients: without scrapes, the
	// drain's calls expire them (memory bounded with nobody scraping).
	expired time.Time
}

// New returns an empty state reading src.
func New[K comparable](src Source, lab Labeler[K], cfg Config) *State[K] {
	cfg.MaxClients = max(cfg.MaxClients, 1)
	if cfg.MaxAddrs <= 0 {
		cfg.MaxAddrs = 4096
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &State[K]{
		src:     src,
		lab:     lab,
		cfg:     cfg,
		clients: make(map[string]*client[K]),
		live:    make(map[tracer.ConnKey]liveConn),
		keys:    newKeyTable[K](),
		addrs:   make(map[netip.Addr]uint64),
	}
}

// Closed folds connections that left the tracer into every client: closed
// ones (Closed set, their final counters) and those the tracer stopped
// reporting without a close (their last counters; a later record of one
// counts only what is new). The tracer's drain calls it; it only takes the
// state's lock, never a snapshot's.
func (s *State[K]) Closed(conns []tracer.ConnectionStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := s.cfg.Now(); now.Sub(s.expired) > time.Second {
		s.expired = now
		s.expire(now)
	}
	if len(s.clients) == 0 {
		s.forgetLive()
		s.addrs = clearBig(s.addrs)
		return // nobody to count it for: a new client gets what leaves after it
	}
	for i := range conns {
		x := &conns[i]
		d := all(x)
		lc, wasLive := s.live[x.Key]
		var k K
		if wasLive {
			k = s.keys.key(lc.key)
		} else {
			k = s.lab.Key(x)
		}
		if s.reading {
			if s.tombs == nil {
				s.tombs = make(map[tracer.ConnKey]tomb[K])
			}
			s.tombs[x.Key] = tomb[K]{d: d, at: x.LastUpdateEpoch, key: k}
		}
		for _, c := range s.clients {
			s.fold(c, x, &d, k, lc, wasLive)
		}
		if wasLive { // after the folds, which read its gaps
			if lc.seen < s.gen {
				s.missing-- // kept while missing (see missing): it leaves
			}
			s.forgetEntry(x.Key, lc)
		}
		s.tel.folded++
		a := x.NATRemote()
		if _, held := s.addrs[a]; !held && len(s.addrs) >= s.cfg.MaxAddrs {
			s.dropOldAddrs()
		}
		s.addrs[a] = s.tel.folded
	}
}

// fold adds a connection that left (x, all its counters d) into c: all
// of it if its series' offset holds what it had counted before the
// client, else what leftAdd says.
func (s *State[K]) fold(c *client[K], x *tracer.ConnectionStats, d *Counters, k K, lc liveConn, wasLive bool) {
	add := d // not copied: a Counters is 800 bytes, and folds go to every client
	if !s.offsetted(c, x.Key, lc, wasLive) {
		if add = c.leftAdd(x, d, &s.end); add == nil {
			return // it left before the client came
		}
	}
	ser := s.seriesOf(c, k, x)
	if ser == c.overflow && !x.Addendum && (!wasLive || lc.first > c.lastGen) {
		c.overflowTotal++ // not counted by a scrape of this client yet
	}
	ser.total.Add(add)
}

// View is one scrape of one client.
type View struct {
	// NewClient is set on the client's first scrape: its counters start.
	NewClient bool
	// Series are the client's series, in creation order, then the
	// overflow series (Overflow set) if it has one.
	Series []Series
	// Own is the number of label sets with a series of their own.
	Own int
	// OverflowConns counts the connections counted into the overflow
	// series, each once.
	OverflowConns uint64
	// Addrs are the remote addresses (NATRemote) of the view: of the live
	// connections and of those folded since the client's previous scrape.
	Addrs []netip.Addr
}

// Series is the value of one label set at a scrape.
type Series struct {
	Labels []string
	// Text is Labeler.Text of Labels.
	Text string
	// TCP is set once a TCP connection counted here: the TCP-only
	// metrics are exported from then on.
	TCP      bool
	Overflow bool
	Counters
	// Open is the established, not closed connections of the label set now.
	Open uint64
	// ZeroWindow is those of them stalled on the remote end's zero
	// receive window now (tracer.ConnectionStats.ZeroWindow);
	// ZeroWindowSeen says one ever was, for this client.
	ZeroWindow     uint64
	ZeroWindowSeen bool
}

// Scrape reads a snapshot from the source and returns clientID's view. A
// new client is admitted (or refused, with an error wrapping
// ErrTooManyClients) before anything is read.
func (s *State[K]) Scrape(clientID string, now time.Time) (*View, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()

	s.mu.Lock()
	s.expire(now)
	c, err := s.admit(clientID, now)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.reading = true
	c.reading = true
	s.mu.Unlock()

	snap, err := s.src.Snapshot()
	if err == nil {
		defer snap.Release() // after the step (deferred before the unlock: runs after it)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	tombs := s.tombs
	s.reading, s.tombs = false, nil
	if s.clients[clientID] != c {
		return nil, fmt.Errorf("client %q was dropped while its scrape read", clientID)
	}
	c.reading = false
	if err != nil {
		if c.fresh {
			delete(s.clients, clientID) // not admitted: it saw nothing
		}
		return nil, err
	}
	s.gen++
	counted := s.observe(snap, tombs)
	v := s.step(c, snap, counted, tombs, now)
	clear(counted) // no pointer into a released snapshot kept
	s.counted = counted[:0]
	if cap(counted) > 4*len(counted)+4096 {
		s.counted = nil // not the memory of a past peak for good
	}
	return v, nil
}

// observe records the snapshot's connections in the shared table (the
// label set of each new one, computed once) and returns those the step
// counts: each key once, without those folded while the snapshot was read,
// and the leaving ones (closed, not folded yet: Snapshot.Leaving) that were
// counted live, so that nothing counted goes down until their fold. A
// leaving one never counted live is left to its fold. Those no snapshot
// holds any more (the tracer folds what leaves: none should be) are
// forgotten.
func (s *State[K]) observe(snap *tracer.Snapshot, tombs map[tracer.ConnKey]tomb[K]) []countedConn {
	counted := slices.Grow(s.counted[:0], len(snap.Conns)+len(snap.Leaving))
	if len(s.live) == 0 && len(snap.Conns) > 4096 {
		// Sized at once: grown one doubling at a time, the map's old
		// tables were garbage as large as the last (16 MB at 200,000).
		s.live = make(map[tracer.ConnKey]liveConn, len(snap.Conns))
	}
	for _, x := range snap.Conns {
		if _, gone := tombs[x.Key]; gone {
			continue
		}
		lc, ok := s.live[x.Key]
		if ok && lc.seen == s.gen {
			continue // the same key twice
		}
		if ok && lc.seen < s.gen-1 {
			s.back(x.Key, lc) // kept while missing (see missing)
		}
		if !ok {
			lc = liveConn{key: s.keys.ref(s.lab.Key(x)), first: s.gen}
		}
		lc.seen = s.gen
		s.live[x.Key] = lc
		counted = append(counted, countedConn{x, lc})
	}
	for i := range snap.Leaving {
		x := &snap.Leaving[i]
		if _, gone := tombs[x.Key]; gone {
			continue
		}
		lc, ok := s.live[x.Key]
		if !ok || lc.seen == s.gen {
			continue
		}
		if lc.seen < s.gen-1 {
			s.back(x.Key, lc) // kept while missing (see missing)
		}
		lc.seen = s.gen
		if lc.leaving == 0 {
			lc.leaving = s.gen
		}
		s.live[x.Key] = lc
		counted = append(counted, countedConn{x, lc})
	}
	// Entries not seen now: those kept missing (s.missing), and those
	// missing since this snapshot.
	if len(s.live) > len(counted)+s.missing || s.recheck && s.missing > 0 {
		s.missing, s.recheck = 0, false
		for k, lc := range s.live {
			switch {
			case lc.seen == s.gen:
				continue
			case lc.seen == s.gen-1:
				s.tel.missing++
			}
			if s.offsettedBySome(k, lc) {
				s.missing++
				continue
			}
			s.forgetEntry(k, lc)
		}
	}
	return counted
}

// offsetted says whether the connection of key (lc, its entry in live if
// wasLive) is in the offset of its series for c: it was in c's first
// snapshot, and not leaving then. Its counters at that snapshot went into
// the offset, so all of its counters count now, live or folded: what it
// counted before the client cancels out. An entry is in every snapshot
// from the one that first saw it to the last that did (seen), but for the
// gaps of one kept while missing (see missing): one first seen at or
// before c's first snapshot, seen since, and not missing from it, was in
// it.
func (s *State[K]) offsetted(c *client[K], key tracer.ConnKey, lc liveConn, wasLive bool) bool {
	if !wasLive || c.fresh || lc.first > c.firstGen || lc.seen < c.firstGen || lc.leaving != 0 && lc.leaving <= c.firstGen {
		return false
	}
	for _, g := range s.gaps[key] {
		if g.from <= c.firstGen && c.firstGen < g.to {
			return false
		}
	}
	return true
}

// genRange is the scrapes [from, to).
type genRange struct{ from, to uint64 }

// back records that the kept entry of key (lc) is in a snapshot again: it
// was missing from the snapshots since the one after lc.seen.
func (s *State[K]) back(key tracer.ConnKey, lc liveConn) {
	s.missing--
	if s.gaps == nil {
		s.gaps = make(map[tracer.ConnKey][]genRange)
	}
	s.gaps[key] = append(s.gaps[key], genRange{lc.seen + 1, s.gen})
}

// offsettedBySome says whether some client's offsets hold the connection
// of key.
func (s *State[K]) offsettedBySome(key tracer.ConnKey, lc liveConn) bool {
	for _, c := range s.clients {
		if s.offsetted(c, key, lc, true) {
			return true
		}
	}
	return false
}

// forgetEntry deletes the live entry of key (lc).
func (s *State[K]) forgetEntry(key tracer.ConnKey, lc liveConn) {
	s.keys.unref(lc.key)
	delete(s.live, key)
	if s.gaps != nil {
		delete(s.gaps, key)
	}
}

// countedConn is a connection a step counts, with its shared entry (as
// observe left it: one lookup fewer per connection).
type countedConn struct {
	x  *tracer.ConnectionStats
	lc liveConn
}

// step returns c's view of snap: its folded counters plus what the live
// connections contribute now, less the offsets. On c's first scrape it
// takes the offsets.
func (s *State[K]) step(c *client[K], snap *tracer.Snapshot, counted []countedConn, tombs map[tracer.ConnKey]tomb[K], now time.Time) *View {
	first := c.fresh
	c.fresh = false
	c.lastFetch = now
	c.calls++
	if first {
		c.firstEpoch, c.firstGen = snap.ReadEnd, s.gen
	}
	for _, ser := range c.list {
		ser.live, ser.open, ser.zeroWindow = Counters{}, 0, 0
	}
	if c.overflow != nil {
		c.overflow.live, c.overflow.open, c.overflow.zeroWindow = Counters{}, 0, 0
	}
	v := &View{NewClient: first}
	addrs := make(map[netip.Addr]struct{}, 16)
	for a, n := range s.addrs {
		if n > c.folded {
			addrs[a] = struct{}{}
		}
	}
	c.folded = s.tel.folded
	s.trimAddrs()
	if first {
		for _, x := range snap.Conns {
			// One that left while the snapshot was read was folded: for
			// a client older than it, from its baseline; for this new
			// one only its end, and here its traffic since this read.
			if t, gone := tombs[x.Key]; gone && x.StartEpoch < c.admitEpoch && t.at >= c.admitEpoch {
				read := all(x)
				d := minus(&t.d, &read)
				s.seriesOf(c, t.key, x).total.Add(&d)
				delete(tombs, x.Key) // once, if the snapshot lists it twice (tombs is this step's)
			}
		}
	}
	for _, cc := range counted {
		x, lc := cc.x, cc.lc
		if x.Closed && x.LastUpdateEpoch < c.admitEpoch {
			continue // leaving, closed before the client came: not its own, nor a series of it
		}
		ser := s.seriesOfID(c, lc.key, x)
		if ser == c.overflow && (first || lc.first > c.lastGen) {
			c.overflowTotal++
		}
		if x.Established && !x.Closed {
			ser.open++
			if x.ZeroWindow {
				ser.zeroWindow++
				ser.zeroWindowSeen = true
			}
		}
		addrs[x.NATRemote()] = struct{}{}
		d := all(x)
		switch {
		case first && x.Closed:
			// Leaving: closed before this first read ended; its fold
			// counts its end for this client, if it closed after the
			// client came (older).
		case first:
			// What it counted before the client is not the client's:
			// into the offset, and it adds nothing now.
			ser.offset.Add(&d)
			ser.live.Add(&d)
		case (x.Closed || x.StartEpoch < c.admitEpoch) && !s.offsetted(c, x.Key, lc, true):
			// Leaving (its fold waiting, for its NAT), or older than the
			// client and not in its offsets (missed by its first
			// snapshot): it counts what its fold would add, no more. It
			// counted whole here, then its fold's less: a counter that
			// went down (TestLeavingAtFirstScrapeNeverCountedWhole, and
			// TestOlderNotInOffsetsNeverGoesDown for one reported with
			// values older than the client). What leftAdd gives only
			// grows with the connection's last update: nothing, its
			// end, all of it.
			if add := c.leftAdd(x, &d, &s.end); add != nil {
				ser.live.Add(add)
			}
		default:
			ser.live.Add(&d)
		}
	}
	c.lastGen = s.gen
	v.Own = len(c.list)
	v.OverflowConns = c.overflowTotal
	v.Series = make([]Series, 0, len(c.list)+1)
	for _, ser := range c.list {
		s.appendValue(v, ser, false)
	}
	if c.overflow != nil {
		s.appendValue(v, c.overflow, true)
	}
	v.Addrs = make([]netip.Addr, 0, len(addrs))
	for a := range addrs {
		if a.IsValid() {
			v.Addrs = append(v.Addrs, a)
		}
	}
	slices.SortFunc(v.Addrs, netip.Addr.Compare)
	return v
}

// appendValue appends ser's value to v.
func (s *State[K]) appendValue(v *View, ser *series, overflow bool) {
	val, reset := ser.value(overflow)
	if reset && !ser.floored {
		s.tel.statsResets++
	}
	ser.floored = reset
	v.Series = append(v.Series, val)
}

// dropOldAddrs makes room in a full addrs: the older half goes (a client
// that has not scraped for long misses the names of its oldest folded
// connections rather than every client the newest), counted.
func (s *State[K]) dropOldAddrs() {
	lo, hi := s.tel.folded, uint64(0)
	for _, n := range s.addrs {
		lo, hi = min(lo, n), max(hi, n)
	}
	mid := lo + (hi-lo)/2
	for a, n := range s.addrs {
		if n <= mid {
			delete(s.addrs, a)
			s.tel.addrsDropped++
		}
	}
}

// trimAddrs forgets the addresses every client has scraped since.
func (s *State[K]) trimAddrs() {
	low := s.tel.folded
	for _, c := range s.clients {
		low = min(low, c.folded)
	}
	for a, n := range s.addrs {
		if n <= low {
			delete(s.addrs, a)
		}
	}
}

// seriesOf returns c's series of label set k, made if new: a series of its
// own while the client has fewer than MaxSeries, else the overflow series.
// A label set keeps the series it got for the client's life (series are
// never dropped: that would lose their counts), so no counter ever moves
// between series. A label set whose values are those of the overflow
// series (a process named "overflow" as the only label) is counted there.
func (s *State[K]) seriesOf(c *client[K], k K, x *tracer.ConnectionStats) *series {
	ser := c.series[k]
	if ser == nil {
		switch values := s.lab.Values(k); {
		case s.cfg.MaxSeries > 0 && len(c.list) >= s.cfg.MaxSeries:
			ser = c.overflowSeries(s.lab)
		case len(values) > 0 && slices.Equal(values, s.lab.Overflow()):
			ser = c.overflowSeries(s.lab)
			c.series[k] = ser
		default:
			ser = &series{labels: values, text: s.lab.Text(values)}
			c.series[k] = ser
			c.list = append(c.list, ser)
		}
	}
	if x.Type == tracer.TCP {
		ser.tcp = true
	}
	return ser
}

// seriesOfID is seriesOf for the label set of id in s.keys, through c's
// cache by id. A label set keeps its series for the client's life, so a
// cached one is the one seriesOf would return.
func (s *State[K]) seriesOfID(c *client[K], id uint32, x *tracer.ConnectionStats) *series {
	gen := s.keys.gens[id]
	if int(id) < len(c.byID) {
		if e := c.byID[id]; e.ser != nil && e.gen == gen {
			if x.Type == tracer.TCP {
				e.ser.tcp = true
			}
			return e.ser
		}
	}
	ser := s.seriesOf(c, s.keys.key(id), x)
	if n := len(c.byID); int(id) >= n { // never shrunk: what Grow adds is zero
		c.byID = slices.Grow(c.byID, int(id)+1-n)[:id+1]
	}
	c.byID[id] = idSeries{ser: ser, gen: gen}
	return ser
}

// Clients returns how many clients are held.
func (s *State[K]) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// HasClient says whether clientID is held.
func (s *State[K]) HasClient(clientID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.clients[clientID]
	return ok
}

// RemoveClient drops a client and everything held for it.
func (s *State[K]) RemoveClient(clientID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients, clientID)
	s.recheck = true // see missing
}

func (s *State[K]) expire(now time.Time) {
	if s.cfg.ClientExpiry <= 0 {
		return
	}
	for id, c := range s.clients {
		if !c.fresh && !c.reading && now.Sub(c.lastFetch) > s.cfg.ClientExpiry {
			delete(s.clients, id)
			s.recheck = true // see missing
		}
	}
	if len(s.clients) == 0 {
		s.forgetLive()
		s.addrs = clearBig(s.addrs)
	}
}

// forgetLive forgets the live connections and their label sets (no client
// to count them for).
func (s *State[K]) forgetLive() {
	s.live = clearBig(s.live)
	s.missing, s.recheck, s.gaps = 0, false, nil
	s.keys.reset()
	s.counted = nil // observe's array: nobody scrapes
}

// Lost returns monotonic counts of what the state failed to count, by
// reason.
func (s *State[K]) Lost() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]uint64{
		// Never counted since clients keep no per-connection state
		// (offsets): kept, at 0, for the alerts and dashboards that
		// name it.
		LostClientStateFull: 0,
		LostClientRejected:  s.tel.clientsRejected,
		LostClientEvicted:   s.tel.clientsEvicted,
	}
}

// GetStats returns the state's health, for debug output (the seed's).
func (s *State[K]) GetStats() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	clients := make(map[string]any, len(s.clients))
	for id, c := range s.clients {
		clients[id] = map[string]int64{
			"series":     int64(len(c.list)),
			"last_fetch": c.lastFetch.Unix(),
		}
	}
	return map[string]any{
		"clients":          clients,
		"live_connections": len(s.live),
		"live_label_sets":  s.keys.len(),
		"telemetry": map[string]uint64{
			"stats_resets":     s.tel.statsResets,
			"missing":          s.tel.missing,
			"folded":           s.tel.folded,
			"clients_rejected": s.tel.clientsRejected,
			"clients_evicted":  s.tel.clientsEvicted,
			"addrs_dropped":    s.tel.addrsDropped,
		},
		"current_time": time.Now().Unix(),
	}
}

// DumpState returns a client's series offsets (what the connections alive
// at its first scrape had counted then), by label set, for debug output
// (the seed's: it returned the client's per-connection state).
func (s *State[K]) DumpState(clientID string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	data := map[string]any{}
	c, ok := s.clients[clientID]
	if !ok {
		return data
	}
	add := func(ser *series) {
		o := &ser.offset
		data[ser.text] = map[string]uint64{
			"total_sent":          o.SentBytes,
			"total_recv":          o.RecvBytes,
			"total_retransmits":   o.Retransmits,
			"total_sent_segments": o.SentSegments,
			"opened":              o.Opened,
		}
	}
	for _, ser := range c.list {
		add(ser)
	}
	if c.overflow != nil {
		add(c.overflow)
	}
	return data
}

// clearBig empties m, dropping it for a new one when it is large (a map
// never shrinks).
func clearBig[M ~map[K]V, K comparable, V any](m M) M {
	if len(m) > 4096 {
		return make(M)
	}
	clear(m)
	return m
}
