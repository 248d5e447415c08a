package collector

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// fakeSource mimics the tracer's per-client delta machinery (NetworkState)
// over connections whose monotonic counters the test sets: each client gets,
// per connection, the change since its previous call, and each closed
// connection once.
type fakeSource struct {
	mu         sync.Mutex
	active     map[tracer.ConnKey]tracer.ConnectionStats
	clients    map[string]*fakeClient
	maxClients int
	err        error // returned by every GetActiveConnections when set
	stats      tracer.Stats
	removed    []string
	calls      int
	// GetActiveConnections of client blockID signals entered, then
	// waits until block is closed.
	blockID        string
	block, entered chan struct{}
}

type fakeClient struct {
	base   map[tracer.ConnKey]tracer.ConnectionStats
	closed []tracer.ConnectionStats
}

func newFakeSource() *fakeSource {
	return &fakeSource{
		active:     make(map[tracer.ConnKey]tracer.ConnectionStats),
		clients:    make(map[string]*fakeClient),
		maxClients: 16,
	}
}

// set adds or updates an active connection (its Monotonic* values).
func (f *fakeSource) set(c tracer.ConnectionStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.SetLifecycle()
	f.active[c.Key] = c
}

// update changes an active connection in place.
func (f *fakeSource) update(k tracer.ConnKey, fn func(c *tracer.ConnectionStats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.active[k]
	if !ok {
		panic(fmt.Sprintf("no active connection %s", k))
	}
	fn(&c)
	c.SetLifecycle()
	f.active[k] = c
}

// close closes an active connection: every client gets it once more.
func (f *fakeSource) close(k tracer.ConnKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.active[k]
	if !ok {
		panic(fmt.Sprintf("no active connection %s", k))
	}
	delete(f.active, k)
	c.Closed = true
	c.SetLifecycle()
	for _, cl := range f.clients {
		cl.closed = append(cl.closed, c)
	}
}

// drop removes an active connection without a close record (as when the
// record is lost, or the tracer times the connection out).
func (f *fakeSource) drop(k tracer.ConnKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.active, k)
}

// forget drops a client, as the tracer's own expiry does.
func (f *fakeSource) forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.clients, id)
}

func delta(c *tracer.ConnectionStats, base *tracer.ConnectionStats) {
	c.LastSentBytes = c.MonotonicSentBytes - base.MonotonicSentBytes
	c.LastRecvBytes = c.MonotonicRecvBytes - base.MonotonicRecvBytes
	c.LastRetransmits = c.MonotonicRetransmits - base.MonotonicRetransmits
	c.LastSentSegments = c.MonotonicSentSegments - base.MonotonicSentSegments
	c.LastOpened = c.MonotonicOpened - base.MonotonicOpened
	c.LastClosed = c.MonotonicClosed - base.MonotonicClosed
	c.LastFailed = c.MonotonicFailed - base.MonotonicFailed
	for i := range c.LastRTT.Buckets {
		c.LastRTT.Buckets[i] = c.MonotonicRTT.Buckets[i] - base.MonotonicRTT.Buckets[i]
	}
	c.LastRTT.SumMicros = c.MonotonicRTT.SumMicros - base.MonotonicRTT.SumMicros
}

func (f *fakeSource) GetActiveConnections(clientID string) (*tracer.Connections, error) {
	if f.blockID != "" && clientID == f.blockID {
		f.entered <- struct{}{}
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	keys := slices.SortedFunc(maps.Keys(f.active), func(a, b tracer.ConnKey) int {
		return int(a.Cookie) - int(b.Cookie)
	})
	cl, ok := f.clients[clientID]
	if !ok {
		if len(f.clients) >= f.maxClients {
			return nil, fmt.Errorf("%w: %d held, the limit (--tracer.max-clients)", tracer.ErrTooManyClients, len(f.clients))
		}
		cl = &fakeClient{base: make(map[tracer.ConnKey]tracer.ConnectionStats)}
		f.clients[clientID] = cl
		out := &tracer.Connections{NewClient: true}
		for _, k := range keys {
			c := f.active[k]
			cl.base[k] = c
			out.Conns = append(out.Conns, c) // Last* are zero
		}
		return out, nil
	}
	out := &tracer.Connections{}
	for _, k := range keys {
		c := f.active[k]
		base := cl.base[k] // zero for a new connection
		delta(&c, &base)
		cl.base[k] = c
		out.Conns = append(out.Conns, c)
	}
	for _, c := range cl.closed {
		base := cl.base[c.Key]
		delta(&c, &base)
		delete(cl.base, c.Key)
		out.Conns = append(out.Conns, c)
	}
	cl.closed = nil
	return out, nil
}

func (f *fakeSource) RemoveClient(clientID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.clients, clientID)
	f.removed = append(f.removed, clientID)
}

func (f *fakeSource) HasClient(clientID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.clients[clientID]
	return ok
}

func (f *fakeSource) Stats() tracer.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Clients = len(f.clients)
	return s
}

var errFake = errors.New("fake failure")
