// Package collector turns the tracer's per-client view of the connections
// into Prometheus metrics.
//
// One scrape is one client's view (see ClientID): the tracer returns, for
// that client, the change of every connection since the client's previous
// call, and the collector adds these deltas into the client's cumulative
// counters, one per label set. So each scraper (each Prometheus of an HA
// pair, say) sees every byte and every closed connection exactly once,
// however the scrapes interleave.
package collector

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/conntrace/conntrace_exporter/tracer"
)

const namespace = "conntrace"

// ClientIDParam is the URL parameter that names the scrape's client.
const ClientIDParam = "client_id"

// Source is what the collector reads connections and health from. The real
// *tracer.Tracer satisfies it; tests use a fake.
type Source interface {
	GetActiveConnections(clientID string) (*tracer.Connections, error)
	RemoveClient(clientID string)
	Stats() tracer.Stats
}

var _ Source = (*tracer.Tracer)(nil)

// ClientID returns the client a scrape belongs to: the client_id URL
// parameter, else the host of the scraper's address. The port is dropped:
// it changes with every TCP connection the scraper opens.
func ClientID(r *http.Request) string {
	if id := r.URL.Query().Get(ClientIDParam); id != "" {
		return id
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// trafficLabels are the labels of every traffic metric, in this order.
// They are fixed for now; the label selection will make them configurable.
var trafficLabels = []string{"protocol", "family", "direction", "remote_addr", "port"}

// The RTT histogram exports the upper bounds 2^rttFirstExp µs to
// 2^rttLastExp µs (8 µs to 16.777216 s). Kernel buckets 0..rttFirstExp go
// into the first exported bucket, those above rttLastExp only into +Inf.
// Every exported bound is a bound of the kernel's buckets, so the
// cumulative counts are exact.
const (
	rttFirstExp = 3
	rttLastExp  = 24
)

// The last kernel bucket is unbounded: it can only go into +Inf.
var _ [tracer.NumRTTBuckets - 2 - rttLastExp]struct{}

// rttBounds are the exported upper bounds, in seconds.
var rttBounds = func() []float64 {
	b := make([]float64, 0, rttLastExp-rttFirstExp+1)
	for i := rttFirstExp; i <= rttLastExp; i++ {
		b = append(b, float64(tracer.RTTBucketUpperBoundMicros(i))/1e6)
	}
	return b
}()

// rttCounts accumulates RTT samples: the kernel's non-cumulative log2
// buckets, in 64 bits (the kernel's deltas are 32-bit).
type rttCounts struct {
	buckets   [tracer.NumRTTBuckets]uint64
	sumMicros uint64
}

func (h *rttCounts) add(o *tracer.RTTHistogram) {
	for i, v := range o.Buckets {
		h.buckets[i] += uint64(v)
	}
	h.sumMicros += o.SumMicros
}

// histogram returns the sample count, the sum in seconds and the
// cumulative buckets of the exported bounds.
func (h *rttCounts) histogram() (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(rttBounds))
	var cum uint64
	for i, v := range h.buckets {
		cum += v
		if i >= rttFirstExp && i <= rttLastExp {
			buckets[rttBounds[i-rttFirstExp]] = cum
		}
	}
	return cum, float64(h.sumMicros) / 1e6, buckets
}

// labelKey is a label set in comparable form: aggregation needs no string.
type labelKey struct {
	remote    netip.Addr
	port      uint16
	protocol  tracer.ConnectionType
	family    tracer.ConnectionFamily
	direction tracer.ConnectionDirection
}

// keyOf returns the label set of a connection. The port is the service
// port: the local port of an incoming connection, the remote port of any
// other (outgoing, local, none), so the ephemeral end never becomes a
// label value. IPv4-mapped IPv6 addresses are unmapped.
func keyOf(c *tracer.ConnectionStats) labelKey {
	port := c.DPort
	if c.Direction == tracer.INCOMING {
		port = c.SPort
	}
	return labelKey{
		remote:    c.Dest.Unmap(),
		port:      port,
		protocol:  c.Type,
		family:    c.Family,
		direction: c.Direction,
	}
}

// values returns the label values, in the order of trafficLabels. A
// connection without a remote address (none should reach here) gets an
// empty remote_addr rather than netip's "invalid IP".
func (k labelKey) values() []string {
	remote := ""
	if k.remote.IsValid() {
		remote = k.remote.String()
	}
	return []string{
		k.protocol.String(),
		k.family.String(),
		k.direction.String(),
		remote,
		strconv.FormatUint(uint64(k.port), 10),
	}
}

// series holds one client's cumulative counters of one label set.
type series struct {
	labels []string // label values, built once
	tcp    bool

	sent, recv, retransmits uint64
	opened, closed, failed  uint64
	rtt                     rttCounts

	// open is the gauge: established, non-closed connections of the
	// current view. It is recomputed on every scrape.
	open uint64
}

func (s *series) add(c *tracer.ConnectionStats) {
	s.sent += c.LastSentBytes
	s.recv += c.LastRecvBytes
	s.retransmits += uint64(c.LastRetransmits)
	s.opened += uint64(c.LastOpened)
	s.closed += uint64(c.LastClosed)
	s.failed += uint64(c.LastFailed)
	s.rtt.add(&c.LastRTT)
	if c.Established && !c.Closed {
		s.open++
	}
}

// clientState is what the collector holds for one client.
type clientState struct {
	// mu serialises the scrapes of this client: a scrape that restarts the
	// series (NewClient) must not interleave with another one's deltas.
	mu     sync.Mutex
	series map[labelKey]*series

	// Guarded by exporter.mu.
	users    int       // scrapes in progress
	live     bool      // a scrape succeeded: the tracer holds the client
	lastSeen time.Time // end of the last successful scrape
}

// descs are the metric descriptions, built once.
type descs struct {
	sent, recv, retransmits *prometheus.Desc
	rtt                     *prometheus.Desc
	open                    *prometheus.Desc
	opened, closed, failed  *prometheus.Desc
}

func newDescs() *descs {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, trafficLabels, nil)
	}
	const perClient = " Counted for this scrape's client (client_id) since its first scrape."
	return &descs{
		sent: d("sent_bytes_total",
			"Payload bytes sent to the remote end (TCP: payload bytes the peer acknowledged)."+perClient),
		recv: d("received_bytes_total",
			"Payload bytes received from the remote end (TCP: in-order payload bytes the kernel received and acknowledged)."+perClient),
		retransmits: d("retransmits_total",
			"TCP segments retransmitted to the remote end (TCP only)."+perClient),
		rtt: d("rtt_seconds",
			"Round-trip time samples the kernel took on TCP connections, in seconds (TCP only)."+perClient),
		open: d("connections",
			"Connections open now: established (TCP: handshake completed) and not closed."),
		opened: d("connections_opened_total",
			"Connections that became established (TCP: handshake completed); connections open before the tracer started are not counted."+perClient),
		closed: d("connections_closed_total",
			"Established connections that closed."+perClient),
		failed: d("connection_failures_total",
			"TCP connections that closed without ever being established (failed connects, TCP only)."+perClient),
	}
}

func (d *descs) describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{d.sent, d.recv, d.retransmits, d.rtt, d.open, d.opened, d.closed, d.failed} {
		ch <- desc
	}
}

// metricsPerSeries is how many metrics a TCP label set yields.
const metricsPerSeries = 8

// appendMetrics appends the const metrics of one label set.
func (d *descs) appendMetrics(ms []prometheus.Metric, s *series) []prometheus.Metric {
	counter := func(desc *prometheus.Desc, v uint64) prometheus.Metric {
		return prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), s.labels...)
	}
	ms = append(ms,
		counter(d.sent, s.sent),
		counter(d.recv, s.recv),
		prometheus.MustNewConstMetric(d.open, prometheus.GaugeValue, float64(s.open), s.labels...),
		counter(d.opened, s.opened),
		counter(d.closed, s.closed),
	)
	if s.tcp {
		count, sum, buckets := s.rtt.histogram()
		ms = append(ms,
			counter(d.retransmits, s.retransmits),
			counter(d.failed, s.failed),
			prometheus.MustNewConstHistogram(d.rtt, count, sum, buckets, s.labels...),
		)
	}
	return ms
}

// exporter holds the state of every client.
type exporter struct {
	src    Source
	descs  *descs
	expiry time.Duration
	now    func() time.Time
	logger log.Logger

	mu      sync.Mutex
	clients map[string]*clientState
}

func newExporter(src Source, o *options) *exporter {
	return &exporter{
		src:     src,
		descs:   newDescs(),
		expiry:  o.expiry,
		now:     o.now,
		logger:  o.logger,
		clients: make(map[string]*clientState),
	}
}

// acquire returns the client's state, locked, and first drops the clients
// not scraped for the expiry.
func (e *exporter) acquire(clientID string) *clientState {
	e.mu.Lock()
	e.expireLocked(e.now())
	st := e.clients[clientID]
	if st == nil {
		st = &clientState{}
		e.clients[clientID] = st
	}
	st.users++
	e.mu.Unlock()

	st.mu.Lock()
	return st
}

// release unlocks the client's state. A client that never had a successful
// scrape (the tracer refused it) is not kept.
func (e *exporter) release(clientID string, st *clientState, ok bool) {
	st.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	st.users--
	if ok {
		st.live = true
		st.lastSeen = e.now()
	}
	if !st.live && st.users == 0 && e.clients[clientID] == st {
		delete(e.clients, clientID)
	}
}

// expireLocked drops the clients not scraped for the expiry, and their state
// in the source. RemoveClient is called under e.mu, so that a new scrape of
// the same client cannot start between the two.
func (e *exporter) expireLocked(now time.Time) {
	if e.expiry <= 0 {
		return
	}
	for id, st := range e.clients {
		if st.users > 0 || !st.live || now.Sub(st.lastSeen) <= e.expiry {
			continue
		}
		delete(e.clients, id)
		e.src.RemoveClient(id)
		level.Debug(e.logger).Log("msg", "Client expired", "client", id, "last_scrape", st.lastSeen)
	}
}

// clientCount returns the number of clients the collector holds.
func (e *exporter) clientCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.clients)
}

// scrape reads clientID's view from the source, adds its deltas into the
// client's counters, and returns the client's const metrics.
func (e *exporter) scrape(clientID string) (ms []prometheus.Metric, err error) {
	st := e.acquire(clientID)
	defer func() { e.release(clientID, st, err == nil) }()

	conns, err := e.src.GetActiveConnections(clientID)
	if err != nil {
		return nil, fmt.Errorf("cannot get the connections of client %q: %w", clientID, err)
	}
	if conns == nil {
		conns = &tracer.Connections{}
	}
	if conns.NewClient || st.series == nil {
		// The source (re)created the client's state: its series restart.
		st.series = make(map[labelKey]*series)
	}
	for _, s := range st.series {
		s.open = 0
	}
	for i := range conns.Conns {
		c := &conns.Conns[i]
		k := keyOf(c)
		s := st.series[k]
		if s == nil {
			s = &series{labels: k.values(), tcp: k.protocol == tracer.TCP}
			st.series[k] = s
		}
		s.add(c)
	}

	ms = make([]prometheus.Metric, 0, len(st.series)*metricsPerSeries)
	for _, s := range st.series {
		ms = e.descs.appendMetrics(ms, s)
	}
	return ms, nil
}

// trafficCollector is the traffic metrics of one client, as a
// prometheus.Collector: each Collect is one scrape of that client.
type trafficCollector struct {
	e        *exporter
	clientID string
}

func (c trafficCollector) Describe(ch chan<- *prometheus.Desc) { c.e.descs.describe(ch) }

func (c trafficCollector) Collect(ch chan<- prometheus.Metric) {
	ms, err := c.e.scrape(c.clientID)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.e.descs.sent, err)
		return
	}
	for _, m := range ms {
		ch <- m
	}
}

// scrapedCollector serves metrics that were already scraped.
type scrapedCollector struct {
	descs   *descs
	metrics []prometheus.Metric
}

func (c scrapedCollector) Describe(ch chan<- *prometheus.Desc) { c.descs.describe(ch) }

func (c scrapedCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.metrics {
		ch <- m
	}
}
