package tracer

import (
	"net/netip"
	"sync"
	"time"
)

// The kernel tests read the tracer through the seed's per-client view:
// GetActiveConnections gives, per connection, the change since the same
// client's previous call (Last*), and each connection that left once. It is
// defined here, for tests only: it checks the tracer's numbers (snapshots
// and the stream of what leaves) against the truth per connection, with
// the simplest bookkeeping there is. The exporter's per-client state, which
// folds per label set, is netstate's, tested on its own and end to end.

// viewConn is a connection as one test client sees it: with Last, the
// change since the client's previous call (the seed's Last* fields), and
// its lifecycle's.
type viewConn struct {
	ConnectionStats
	Last                               Counters
	LastOpened, LastClosed, LastFailed uint32
}

// viewConns is what GetActiveConnections returns (the seed's Connections,
// with Last).
type viewConns struct {
	Conns     []viewConn
	DNS       map[netip.Addr][]string
	NewClient bool
}

// viewer is one test client.
type viewer struct {
	admit uint64                      // kernel time of its first call
	first uint64                      // kernel time its first read ended
	seen  map[ConnKey]ConnectionStats // what it was given of each live connection
	left  []ConnectionStats           // what left since its last call
}

// viewers is the sink of a tracer under test: it hands what leaves to each
// client.
type viewers struct {
	mu sync.Mutex
	m  map[string]*viewer
}

func (vs *viewers) Closed(conns []ConnectionStats) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for _, v := range vs.m {
		v.left = append(v.left, conns...)
	}
}

func (vs *viewers) Clients() int {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return len(vs.m)
}

var testViewers sync.Map // *Tracer -> *viewers

// GetActiveConnections returns clientID's view (tests only, see above).
func (t *Tracer) GetActiveConnections(clientID string) (*viewConns, error) {
	vsAny, loaded := testViewers.LoadOrStore(t, &viewers{m: map[string]*viewer{}})
	vs := vsAny.(*viewers)
	if !loaded {
		t.SetSink(vs)
	}
	vs.mu.Lock()
	v := vs.m[clientID]
	first := v == nil
	if first {
		v = &viewer{admit: ktimeNow(), seen: map[ConnKey]ConnectionStats{}}
		vs.m[clientID] = v
	}
	vs.mu.Unlock()

	snap, err := t.Snapshot()
	if err != nil {
		if first {
			vs.mu.Lock()
			delete(vs.m, clientID)
			vs.mu.Unlock()
		}
		return nil, err
	}
	defer snap.Release()
	vs.mu.Lock()
	left := v.left
	v.left = nil
	if first {
		v.first = snap.ReadEnd
	}
	vs.mu.Unlock()
	gone := make(map[ConnKey]bool, len(left))
	for _, c := range left {
		gone[c.Key] = true
	}
	out := &viewConns{NewClient: first}
	for _, p := range snap.Conns {
		sc := *p
		if gone[sc.Key] {
			continue // left during the read: its record reports it
		}
		c := viewConn{ConnectionStats: sc}
		if prev, ok := v.seen[c.Key]; ok {
			setLast(&c, &prev)
		} else if !first {
			setLast(&c, &ConnectionStats{})
		}
		v.seen[c.Key] = sc
		out.Conns = append(out.Conns, c)
	}
	for _, lc := range left {
		if lc.LastUpdateEpoch < v.admit {
			continue // left before the client came
		}
		c := viewConn{ConnectionStats: lc}
		prev, ok := v.seen[c.Key]
		switch {
		case ok:
			setLast(&c, &prev)
		case c.StartEpoch < v.admit && (first || c.LastUpdateEpoch <= v.first):
			// Older than the client, gone before its read: only its end.
			_, closed, failed := c.Lifecycle()
			c.LastClosed, c.LastFailed = bit32(closed), bit32(failed)
		default:
			setLast(&c, &ConnectionStats{})
		}
		delete(v.seen, c.Key)
		out.Conns = append(out.Conns, c)
	}
	if t.dns != nil {
		addrs := make([]netip.Addr, len(out.Conns))
		for i := range out.Conns {
			addrs[i] = out.Conns[i].NATRemote()
		}
		out.DNS = t.dns.Lookup(addrs, time.Now())
	}
	return out, nil
}

// setLast sets c's Last to its Monotonic minus prev's (a counter below
// prev's counts whole), and its lifecycle's.
func setLast(c *viewConn, prev *ConnectionStats) {
	c.Last, _ = c.Monotonic.Sub(&prev.Monotonic, true)
	sub := func(a, b bool) uint32 {
		if a && !b {
			return 1
		}
		return 0
	}
	opened, closed, failed := c.Lifecycle()
	pOpened, pClosed, pFailed := prev.Lifecycle()
	c.LastOpened, c.LastClosed, c.LastFailed = sub(opened, pOpened), sub(closed, pClosed), sub(failed, pFailed)
}

func bit32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
