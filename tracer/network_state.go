package tracer

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// DEBUGCLIENT is the client ID used by debug endpoints.
const DEBUGCLIENT = "-1"

// ErrTooManyClients is returned (wrapped, with the limit in the message) by
// Connections when a new client arrives while MaxClients clients are held.
var ErrTooManyClients = errors.New("too many clients")

// NetworkState turns the tracer's monotonic counters into per-client deltas.
//
// Each client (an HTTP client ID) has its own baselines, so several scrapers
// each see every byte, retransmit, RTT sample, opening, closing and failure
// exactly once. Connections closed between two calls of a client are buffered
// for that client and merged into its next call.
type NetworkState interface {
	// Admit makes clientID known before its connections are read, at
	// kernel time readEpoch (CLOCK_MONOTONIC ns, taken before the read): the
	// connections that close from then on, while the read and its drain
	// run, are buffered for a new client too. A new client beyond
	// MaxClients is refused here, before anything is read: the error wraps
	// ErrTooManyClients. A client admitted whose first call has not come
	// yet is admitted again from readEpoch.
	Admit(clientID string, now time.Time, readEpoch uint64) error
	// Connections returns, for clientID, the connections given (the active set
	// read from the kernel just now, with Monotonic* filled) merged with the
	// closed connections buffered for that client, with Last* deltas filled.
	//
	// Connections takes ownership of active: it fills the lifecycle counters
	// and Last* in place, and the slice it returns may share active's backing
	// array (closed connections are appended). The caller must not use active
	// afterwards, nor hand the same slice to another call.
	//
	// latestEpoch is the kernel time (CLOCK_MONOTONIC ns, as LastUpdateEpoch)
	// at which the read of active ended. A client not admitted is admitted
	// here, from latestEpoch. A new client gets only the connections that
	// close after it was admitted: an older close record is not buffered for
	// it, however late the record reaches user space.
	//
	// On a client's first call newClient is true and every Last* is zero,
	// but for the connections that closed since the client was admitted
	// (their change since the read). When the client is unknown and
	// MaxClients clients are held, it returns an error wrapping
	// ErrTooManyClients and changes nothing else.
	Connections(clientID string, now time.Time, latestEpoch uint64, active []ConnectionStats) (conns []ConnectionStats, newClient bool, err error)
	// StoreClosedConnection buffers a closed connection for every existing
	// client that was created before the connection closed. It returns the
	// record's sequence number, and false when no client holds it.
	StoreClosedConnection(conn ConnectionStats) (seq uint64, held bool)
	// SetTranslation sets the NAT of the closed record seq, if it is still
	// held (found after it was stored, before any client took it).
	SetTranslation(seq uint64, tr *IPTranslation)
	// OldestClosed is the sequence number of the oldest closed record held.
	OldestClosed() uint64
	// RemoveClient drops a client and everything held for it.
	RemoveClient(clientID string)
	// RemoveExpiredClients drops the clients whose last call is older than
	// ClientStateExpiry.
	RemoveExpiredClients(now time.Time)
	// RemoveConnections deletes the baselines of keys in every client.
	RemoveConnections(keys []ConnKey)
	// GetStats returns the state's health, for debug output.
	GetStats() map[string]interface{}
	// DumpState returns a client's baselines, for debug output.
	DumpState(clientID string) map[string]interface{}
	// Lost returns monotonic counts of what the state failed to count, by reason
	// (tracer.LostClosedBufferFull, LostClientStateFull, LostClientRejected,
	// LostClientEvicted).
	Lost() map[string]uint64
	// Clients returns how many clients are held.
	Clients() int
	// HasClient says whether clientID is held.
	HasClient(clientID string) bool
}

// baseline is what a client saw of one connection at its previous call: the
// connection's monotonic counters. It holds no pointer, so the garbage
// collector does not scan the slabs of baselines.
type baseline struct {
	key ConnKey
	// mark is the client's call number that last saw the key active;
	// baselines not marked by a call are deleted at its end.
	mark uint64
	// closing is set while the key's closed record is being merged.
	closing bool
	sent    uint64
	recv    uint64
	retrans uint32
	segs    uint32
	opened  uint32
	closed  uint32
	failed  uint32
	rtt     RTTHistogram
}

type client struct {
	lastFetch time.Time
	// sinceEpoch is the kernel time the client was admitted (before its
	// first read): connections that closed before it are not the client's.
	sinceEpoch uint64
	// firstEpoch and prevEpoch are the kernel times at which the client's
	// first and previous reads ended: a connection that started before
	// firstEpoch is older than the client, one that started after prevEpoch
	// is new since the previous call.
	firstEpoch, prevEpoch uint64
	// fresh is set from Admit to the first call.
	fresh bool
	// dropped is set when the first call found the baselines full: some
	// connections older than the client have none, and their traffic
	// before one is taken is not the client's to count.
	dropped bool
	// cursor is the sequence number of the next record of the closed log
	// the client takes (see networkState.log).
	cursor uint64
	// closed holds, during a call, the connections closed since the
	// client's previous one: taken from the log, the newest record of each.
	closed map[ConnKey]ConnectionStats
	// index maps a key to its baseline in slab; free lists the unused slab
	// slots. A slab instead of map values: a baseline is larger than what a
	// map stores inline (128 bytes), so map values would allocate each.
	index map[ConnKey]int32
	slab  []baseline
	free  []int32
	// calls counts the client's calls; see baseline.mark.
	calls uint64
}

func newClient() *client {
	return &client{
		closed: make(map[ConnKey]ConnectionStats),
		index:  make(map[ConnKey]int32),
	}
}

func (c *client) baseline(k ConnKey) *baseline {
	if i, ok := c.index[k]; ok {
		return &c.slab[i]
	}
	return nil
}

// addBaseline stores conn's monotonic counters as the baseline of its key,
// which must not have one yet.
func (c *client) addBaseline(conn *ConnectionStats) {
	var i int32
	if n := len(c.free); n > 0 {
		i = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		c.slab = append(c.slab, baseline{})
		i = int32(len(c.slab) - 1)
	}
	b := &c.slab[i]
	b.key = conn.Key
	b.mark = c.calls
	b.closing = false
	b.set(conn)
	c.index[conn.Key] = i
}

func (c *client) deleteBaseline(k ConnKey) {
	i, ok := c.index[k]
	if !ok {
		return
	}
	delete(c.index, k)
	c.free = append(c.free, i)
}

// set makes conn's monotonic counters the baseline.
func (b *baseline) set(conn *ConnectionStats) {
	b.sent = conn.MonotonicSentBytes
	b.recv = conn.MonotonicRecvBytes
	b.retrans = conn.MonotonicRetransmits
	b.segs = conn.MonotonicSentSegments
	b.opened = conn.MonotonicOpened
	b.closed = conn.MonotonicClosed
	b.failed = conn.MonotonicFailed
	b.rtt = conn.MonotonicRTT
}

type telemetry struct {
	statsResets       uint64
	unorderedConns    uint64
	closedConnDropped uint64 // LostClosedBufferFull
	connDropped       uint64 // LostClientStateFull
	clientsRejected   uint64 // LostClientRejected
	clientsEvicted    uint64 // LostClientEvicted
}

type networkState struct {
	mu      sync.Mutex
	clients map[string]*client
	tel     telemetry
	// pending is scratch space for Connections: the positions of the
	// connections that have no baseline yet.
	pending []int
	// log holds the closed connections some client has not taken yet,
	// once for all clients (a record costs the same with one client as
	// with sixteen): they are log[logOff:], and the record of sequence
	// number s is log[logOff+s-logBase]. At most maxClosedConns; past it
	// the oldest goes, counted for each client that had not taken it.
	log     []ConnectionStats
	logOff  int
	logBase uint64

	clientExpiry   time.Duration
	maxClosedConns int
	maxClientStats int
	maxClients     int
}

// NewNetworkState returns an empty state using cfg's ClientStateExpiry,
// MaxClosedConnectionsBuffered, MaxConnectionsStateBuffered and MaxClients.
// A nil cfg means NewDefaultConfig().
func NewNetworkState(cfg *Config) NetworkState {
	if cfg == nil {
		cfg = NewDefaultConfig()
	}
	return &networkState{
		clients:        make(map[string]*client),
		clientExpiry:   cfg.ClientStateExpiry,
		maxClosedConns: cfg.MaxClosedConnectionsBuffered,
		maxClientStats: cfg.MaxConnectionsStateBuffered,
		maxClients:     cfg.MaxClients,
	}
}

func (ns *networkState) Connections(clientID string, now time.Time, latestEpoch uint64, active []ConnectionStats) ([]ConnectionStats, bool, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()

	ns.removeExpiredClients(now)
	c := ns.clients[clientID]
	if c == nil {
		var err error
		if c, err = ns.admit(clientID, now, latestEpoch); err != nil {
			return nil, false, err
		}
	}
	ns.take(c)
	if c.fresh {
		return ns.firstCall(c, now, latestEpoch, active), true, nil
	}

	c.calls++
	c.lastFetch = now

	// Flag the baselines of the closed connections, so that the active loop
	// recognizes their stale entries without a lookup in c.closed each.
	for k := range c.closed {
		if b := c.baseline(k); b != nil {
			b.closing = true
		}
	}

	// Active connections. One whose key is also closed is stale: the closed
	// one, newer, replaces it. Those without a baseline wait until the
	// baselines of vanished connections are deleted.
	n, marked := 0, 0
	ns.pending = ns.pending[:0]
	for i := range active {
		b := c.baseline(active[i].Key)
		if b != nil && b.closing {
			continue // stale
		}
		if b == nil && len(c.closed) > 0 {
			if _, stale := c.closed[active[i].Key]; stale {
				continue
			}
		}
		if n != i {
			active[n] = active[i]
		}
		conn := &active[n]
		conn.SetLifecycle()
		if b != nil {
			ns.delta(b, conn)
			b.mark = c.calls
			marked++
		} else {
			ns.pending = append(ns.pending, n)
		}
		n++
	}
	out := ns.mergeClosed(c, active[:n], false)

	// Keep only the baselines of the active set.
	if marked < len(c.index) {
		for k, i := range c.index {
			if c.slab[i].mark != c.calls {
				delete(c.index, k)
				c.free = append(c.free, i)
			}
		}
	}

	// New connections: everything they carry happened since the last call.
	for _, i := range ns.pending {
		conn := &out[i]
		if _, dup := c.index[conn.Key]; dup {
			// The same key twice in active: the first one counted it.
			zeroLast(conn)
			continue
		}
		old := c.older(conn)
		if len(c.index) >= ns.maxClientStats {
			// Without a baseline, its traffic waits: a connection newer than
			// the client is reported whole once it gets one (or at its
			// close), late but exact. Counted once, on the call that first
			// finds it (an older one was counted on the first call).
			if !old && conn.StartEpoch >= c.prevEpoch {
				ns.tel.connDropped++
			}
			zeroLast(conn)
			continue
		}
		if old {
			zeroLast(conn) // its traffic so far is from before the client
		} else {
			setLastToMonotonic(conn)
		}
		c.addBaseline(conn)
	}
	c.prevEpoch = latestEpoch
	return out, false, nil
}

// older says whether conn has no baseline because the client's first call
// found the baselines full: it started before the client, whose traffic
// until the baseline is taken is lost (counted on the first call).
func (c *client) older(conn *ConnectionStats) bool {
	return c.dropped && conn.StartEpoch < c.firstEpoch
}

// oneShotGrace protects a client after its first call from the eviction of
// other scrapers' new clients, long enough for a Prometheus to come back (a
// scrape interval is at most 2 minutes in practice: staleness is 5).
const oneShotGrace = 2 * time.Minute

// clientHost is the scraper address of a client id (collector.ClientID:
// "client_id@address", or the address alone).
func clientHost(id string) string {
	if i := strings.LastIndexByte(id, '@'); i >= 0 {
		return id[i+1:]
	}
	return id
}

// perHost is how many clients one scraper address holds at most.
func (ns *networkState) perHost() int { return max(4, ns.maxClients/4) }

// makeRoom makes room for the new client id, if it can, by evicting a
// client that never came back after its first call (a Prometheus comes
// back every scrape interval; one-off requests, a new client_id each, do
// not): the oldest of the new client's own address when that address is at
// its share (perHost), else the oldest of any address past oneShotGrace.
// So one address cannot hold more than its share, nor evict another's new
// Prometheus before it could come back. Clients that came back are never
// evicted, only expired. Callers hold ns.mu.
func (ns *networkState) makeRoom(id string, now time.Time) bool {
	host := clientHost(id)
	own := 0
	for oid := range ns.clients {
		if clientHost(oid) == host {
			own++
		}
	}
	if own < ns.perHost() && len(ns.clients) < ns.maxClients {
		return true
	}
	var oldest string
	var c *client
	for oid, o := range ns.clients {
		mine := clientHost(oid) == host
		switch {
		case o.calls > 0:
			continue
		case own >= ns.perHost() && !mine:
			continue
		case own < ns.perHost() && now.Sub(o.lastFetch) < oneShotGrace:
			continue
		}
		if c == nil || o.lastFetch.Before(c.lastFetch) {
			oldest, c = oid, o
		}
	}
	if c == nil {
		return false
	}
	delete(ns.clients, oldest)
	ns.tel.clientsEvicted++
	ns.trimLog()
	return true
}

// admit makes a new client (see Admit). Callers hold ns.mu, and expired
// the clients past their time.
func (ns *networkState) admit(clientID string, now time.Time, readEpoch uint64) (*client, error) {
	if c := ns.clients[clientID]; c != nil && !c.fresh {
		return c, nil
	}
	if _, ok := ns.clients[clientID]; !ok && !ns.makeRoom(clientID, now) {
		ns.tel.clientsRejected++
		return nil, fmt.Errorf("%w: %d held, the limit (--tracer.max-clients; at most %d per scraper address), and none can make room: each came back after its first scrape, or is younger than %s",
			ErrTooManyClients, len(ns.clients), ns.perHost(), oneShotGrace)
	}
	c := newClient()
	c.fresh = true
	c.sinceEpoch = readEpoch
	c.lastFetch = now
	c.cursor = ns.logEnd() // only what closes from now on
	ns.clients[clientID] = c
	return c, nil
}

func (ns *networkState) Admit(clientID string, now time.Time, readEpoch uint64) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.removeExpiredClients(now)
	_, err := ns.admit(clientID, now, readEpoch)
	return err
}

// firstCall takes the baselines of a new client: it sees no delta yet, but
// for the connections that closed since it was admitted. latestEpoch is
// when the read of active ended.
func (ns *networkState) firstCall(c *client, now time.Time, latestEpoch uint64, active []ConnectionStats) []ConnectionStats {
	c.fresh = false
	c.lastFetch = now
	c.firstEpoch, c.prevEpoch = latestEpoch, latestEpoch
	n := 0
	for i := range active {
		conn := &active[i]
		conn.SetLifecycle()
		zeroLast(conn)
		if _, dup := c.index[conn.Key]; !dup {
			if len(c.index) >= ns.maxClientStats {
				ns.tel.connDropped++
				c.dropped = true
			} else {
				c.addBaseline(conn)
			}
		}
		if _, closed := c.closed[conn.Key]; closed {
			continue // its close record, newer, reports it
		}
		if n != i {
			active[n] = active[i]
		}
		n++
	}
	return ns.mergeClosed(c, active[:n], true)
}

// mergeClosed appends the client's closed connections to out: a last delta,
// then the baseline goes. first is the client's first call: a connection
// that started before the client was admitted and closed while its first
// read waited has no baseline, and only its end is the client's.
func (ns *networkState) mergeClosed(c *client, out []ConnectionStats, first bool) []ConnectionStats {
	for _, conn := range c.closed {
		conn.SetLifecycle()
		switch b := c.baseline(conn.Key); {
		case b != nil:
			ns.delta(b, &conn)
			c.deleteBaseline(conn.Key)
		case c.older(&conn), first && conn.StartEpoch < c.sinceEpoch:
			// Its traffic is not the client's to count (see older); its
			// end is.
			zeroLast(&conn)
			conn.LastClosed, conn.LastFailed = conn.MonotonicClosed, conn.MonotonicFailed
		default:
			setLastToMonotonic(&conn)
		}
		out = append(out, conn)
	}
	if len(c.closed) > 0 {
		// A new map rather than clear(): a map never shrinks, and this one
		// may have held a burst of closed connections.
		c.closed = make(map[ConnKey]ConnectionStats)
	}
	return out
}

// delta sets conn's Last* to its Monotonic* minus the baseline, then moves
// the baseline to Monotonic*. A counter below its baseline (the kernel's
// entry was replaced) counts a stats reset and is reported whole.
func (ns *networkState) delta(b *baseline, conn *ConnectionStats) {
	reset := false
	conn.LastSentBytes = sub64(conn.MonotonicSentBytes, b.sent, &reset)
	conn.LastRecvBytes = sub64(conn.MonotonicRecvBytes, b.recv, &reset)
	conn.LastRetransmits = sub32(conn.MonotonicRetransmits, b.retrans, &reset)
	conn.LastSentSegments = sub32(conn.MonotonicSentSegments, b.segs, &reset)
	conn.LastOpened = sub32(conn.MonotonicOpened, b.opened, &reset)
	conn.LastClosed = sub32(conn.MonotonicClosed, b.closed, &reset)
	conn.LastFailed = sub32(conn.MonotonicFailed, b.failed, &reset)
	for i, v := range conn.MonotonicRTT.Buckets {
		conn.LastRTT.Buckets[i] = sub32(v, b.rtt.Buckets[i], &reset)
	}
	conn.LastRTT.SumMicros = sub64(conn.MonotonicRTT.SumMicros, b.rtt.SumMicros, &reset)
	if reset {
		ns.tel.statsResets++
	}
	b.set(conn)
}

func sub64(mono, base uint64, reset *bool) uint64 {
	if mono < base {
		*reset = true
		return mono
	}
	return mono - base
}

func sub32(mono, base uint32, reset *bool) uint32 {
	if mono < base {
		*reset = true
		return mono
	}
	return mono - base
}

func setLastToMonotonic(conn *ConnectionStats) {
	conn.LastSentBytes = conn.MonotonicSentBytes
	conn.LastRecvBytes = conn.MonotonicRecvBytes
	conn.LastRetransmits = conn.MonotonicRetransmits
	conn.LastSentSegments = conn.MonotonicSentSegments
	conn.LastRTT = conn.MonotonicRTT
	conn.LastOpened = conn.MonotonicOpened
	conn.LastClosed = conn.MonotonicClosed
	conn.LastFailed = conn.MonotonicFailed
}

func zeroLast(conn *ConnectionStats) {
	conn.LastSentBytes = 0
	conn.LastRecvBytes = 0
	conn.LastRetransmits = 0
	conn.LastSentSegments = 0
	conn.LastRTT = RTTHistogram{}
	conn.LastOpened = 0
	conn.LastClosed = 0
	conn.LastFailed = 0
}

func (ns *networkState) StoreClosedConnection(conn ConnectionStats) (uint64, bool) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if len(ns.clients) == 0 {
		return 0, false // nobody to give it to: a new client gets what closes after it
	}
	if len(ns.records()) >= ns.maxClosedConns {
		old := &ns.log[ns.logOff]
		for _, c := range ns.clients {
			if c.cursor == ns.logBase {
				c.cursor++
				if old.LastUpdateEpoch >= c.sinceEpoch {
					ns.tel.closedConnDropped++
				}
			}
		}
		*old = ConnectionStats{} // no pointer kept
		ns.logOff++
		ns.logBase++
		if ns.logOff >= max(ns.maxClosedConns/8, 1) {
			// Move the records to the front, rather than let the array
			// grow while its head is dead: at most 1/8 more than the cap
			// (a copy of the cap's records every cap/8 records dropped,
			// only while records are being lost anyway).
			n := copy(ns.log, ns.log[ns.logOff:])
			clear(ns.log[n:])
			ns.log, ns.logOff = ns.log[:n], 0
		}
	}
	ns.log = append(ns.log, conn)
	return ns.logEnd() - 1, true
}

func (ns *networkState) OldestClosed() uint64 {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.logBase
}

func (ns *networkState) SetTranslation(seq uint64, tr *IPTranslation) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if seq >= ns.logBase && seq < ns.logEnd() {
		ns.log[ns.logOff+int(seq-ns.logBase)].IPTranslation = tr
	}
}

// records are the closed records held; logEnd the sequence number of the
// next one.
func (ns *networkState) records() []ConnectionStats { return ns.log[ns.logOff:] }

func (ns *networkState) logEnd() uint64 { return ns.logBase + uint64(len(ns.records())) }

// take fills c.closed with the records of the log the client has not
// taken (those closed after it was admitted; of a key closed twice, the
// newest), then forgets what every client took.
func (ns *networkState) take(c *client) {
	end := ns.logEnd()
	for _, conn := range ns.records()[c.cursor-ns.logBase:] {
		if conn.LastUpdateEpoch < c.sinceEpoch {
			continue
		}
		if prev, ok := c.closed[conn.Key]; ok && conn.LastUpdateEpoch < prev.LastUpdateEpoch {
			ns.tel.unorderedConns++
			continue
		}
		c.closed[conn.Key] = conn
	}
	c.cursor = end
	ns.trimLog()
}

// trimLog drops the records every client has taken.
func (ns *networkState) trimLog() {
	low := ns.logEnd()
	for _, c := range ns.clients {
		low = min(low, c.cursor)
	}
	n := int(low - ns.logBase)
	if n == 0 {
		return
	}
	clear(ns.log[ns.logOff : ns.logOff+n]) // no pointer kept
	ns.logOff += n
	ns.logBase = low
	if ns.logOff == len(ns.log) {
		// All taken: the array serves again from its start, unless a
		// burst made it large.
		ns.log, ns.logOff = ns.log[:0], 0
		if cap(ns.log) > 4096 {
			ns.log = nil
		}
	}
}

func (ns *networkState) RemoveClient(clientID string) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	delete(ns.clients, clientID)
	ns.trimLog()
}

func (ns *networkState) RemoveExpiredClients(now time.Time) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.removeExpiredClients(now)
}

func (ns *networkState) removeExpiredClients(now time.Time) {
	gone := false
	for id, c := range ns.clients {
		if now.Sub(c.lastFetch) > ns.clientExpiry {
			delete(ns.clients, id)
			gone = true
		}
	}
	if gone {
		ns.trimLog()
	}
}

func (ns *networkState) RemoveConnections(keys []ConnKey) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, c := range ns.clients {
		for _, k := range keys {
			c.deleteBaseline(k)
		}
	}
}

func (ns *networkState) GetStats() map[string]interface{} {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	clients := make(map[string]interface{}, len(ns.clients))
	for id, c := range ns.clients {
		clients[id] = map[string]int64{
			"stats":              int64(len(c.index)),
			"closed_connections": int64(ns.logEnd() - c.cursor),
			"last_fetch":         c.lastFetch.Unix(),
		}
	}
	return map[string]interface{}{
		"clients":        clients,
		"closed_records": len(ns.records()),
		"telemetry": map[string]uint64{
			"stats_resets":        ns.tel.statsResets,
			"unordered_conns":     ns.tel.unorderedConns,
			"closed_conn_dropped": ns.tel.closedConnDropped,
			"conn_dropped":        ns.tel.connDropped,
			"clients_rejected":    ns.tel.clientsRejected,
			"clients_evicted":     ns.tel.clientsEvicted,
		},
		"current_time": time.Now().Unix(),
	}
}

func (ns *networkState) DumpState(clientID string) map[string]interface{} {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	data := map[string]interface{}{}
	c, ok := ns.clients[clientID]
	if !ok {
		return data
	}
	for k, i := range c.index {
		b := &c.slab[i]
		data[k.String()] = map[string]uint64{
			"total_sent":          b.sent,
			"total_recv":          b.recv,
			"total_retransmits":   uint64(b.retrans),
			"total_sent_segments": uint64(b.segs),
		}
	}
	return data
}

func (ns *networkState) Lost() map[string]uint64 {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return map[string]uint64{
		LostClosedBufferFull: ns.tel.closedConnDropped,
		LostClientStateFull:  ns.tel.connDropped,
		LostClientRejected:   ns.tel.clientsRejected,
		LostClientEvicted:    ns.tel.clientsEvicted,
	}
}

func (ns *networkState) HasClient(clientID string) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	_, ok := ns.clients[clientID]
	return ok
}

func (ns *networkState) Clients() int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return len(ns.clients)
}
