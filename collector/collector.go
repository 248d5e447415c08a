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
	"maps"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
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
	// HasClient says whether the source holds the client (it drops
	// clients of its own: expired, or evicted for a new one).
	HasClient(clientID string) bool
	Stats() tracer.Stats
}

var _ Source = (*tracer.Tracer)(nil)

// ClientID returns the client a scrape belongs to: the host of the
// scraper's address, and the client_id URL parameter if given
// ("id@host"). The port is dropped: it changes with every TCP connection
// the scraper opens. The host is always part of it, so that whoever
// guesses a client_id cannot take that client's deltas from another
// address (through a proxy, every scraper has the proxy's address: require
// authentication there, see README).
func ClientID(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if id := r.URL.Query().Get(ClientIDParam); id != "" {
		return id + "@" + host
	}
	return host
}

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

// series holds one client's cumulative counters of one label set.
type series struct {
	labels []string // label values, built once
	// tcp is set once a TCP connection counted here: the TCP-only metrics
	// (retransmits, RTT, failures) are exported from then on. A label set
	// with protocol="udp" never has them; one without the protocol label
	// has them once TCP traffic reached it. UDP connections have none of
	// these counters, so no delta is hidden by the rule.
	tcp bool

	sent, recv, retransmits uint64
	segments                uint64
	opened, closed, failed  uint64
	rtt                     rttCounts

	// open is the gauge: established, non-closed connections of the
	// current view. It is recomputed on every scrape.
	open uint64
}

func (s *series) add(c *tracer.ConnectionStats) {
	if c.Type == tracer.TCP {
		s.tcp = true
	}
	s.sent += c.LastSentBytes
	s.recv += c.LastRecvBytes
	s.retransmits += uint64(c.LastRetransmits)
	s.segments += uint64(c.LastSentSegments)
	s.opened += uint64(c.LastOpened)
	s.closed += uint64(c.LastClosed)
	s.failed += uint64(c.LastFailed)
	s.rtt.add(&c.LastRTT)
	if c.Established && !c.Closed {
		s.open++
	}
}

// clientState is what the collector holds for one client.
//
// Bounded cardinality: at most maxSeries label sets get a series of their
// own (first come, first served, in the order the source lists the
// connections). Past the cap, every new label set goes to one overflow
// series per metric, whose every label has the value "overflow" (so
// {remote_addr="overflow"}, or any other selected label, selects it). A
// label set keeps the series it got for the client's life: the real series
// are never dropped (that would lose their counts), so the label sets
// outside them stay in the overflow series too, and no counter ever moves
// between series. The sum over all series of every metric is thus the sum
// of the deltas, whatever the labels, groups and cap.
//
// conntrace_series_overflow_total counts the connections whose deltas went
// to the overflow series, each connection once (the bytes and connection
// counts are in the overflow series itself); conntrace_series is the
// number of label sets with a series of their own.
type clientState struct {
	// mu serialises the scrapes of this client: a scrape that restarts the
	// series (NewClient) must not interleave with another one's deltas.
	mu     sync.Mutex
	series map[labelKey]*series // label set -> its series (or overflow, see newSeries)
	list   []*series            // the series of their own, in creation order
	// overflow is the overflow series, nil until a label set needs it.
	overflow *series
	// overflowConns holds the connections counted into the overflow
	// series, with the scrape (gen) that last saw them, so that
	// overflowTotal counts each connection once; closed ones, and those
	// no longer in the view, are dropped.
	overflowConns map[tracer.ConnKey]uint64
	overflowTotal uint64
	gen           uint64
	// keys is scratch space: the label set of each connection of the view.
	keys []labelKey

	// Guarded by exporter.mu.
	users    int       // scrapes in progress
	live     bool      // a scrape succeeded: the tracer holds the client
	lastSeen time.Time // end of the last successful scrape
}

// reset restarts the client's series (a new client in the source).
func (st *clientState) reset() {
	st.series = make(map[labelKey]*series)
	st.list = nil
	st.overflow = nil
	st.overflowConns = nil
	st.overflowTotal = 0
}

// descs are the metric descriptions, built once.
type descs struct {
	sent, recv, retransmits *prometheus.Desc
	segments                *prometheus.Desc
	rtt                     *prometheus.Desc
	open                    *prometheus.Desc
	opened, closed, failed  *prometheus.Desc

	// Per client, without labels.
	seriesCount, seriesLimit, overflow *prometheus.Desc
	nameInfo, namesDropped             *prometheus.Desc
}

func newDescs(labels []string) *descs {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	const perClient = " Counted for this scrape's client (client_id) since its first scrape."
	const overflow = ` Label sets beyond --collector.max-series are counted in one series whose labels are all "overflow".`
	return &descs{
		sent: d("sent_bytes_total",
			"Payload bytes sent to the remote end (TCP: payload bytes the peer acknowledged)."+perClient+overflow),
		recv: d("received_bytes_total",
			"Payload bytes received from the remote end (TCP: in-order payload bytes the kernel received and acknowledged)."+perClient+overflow),
		retransmits: d("retransmits_total",
			"TCP segments retransmitted to the remote end (TCP only)."+perClient+overflow),
		segments: d("sent_segments_total",
			"TCP data segments sent to the remote end, retransmissions included (TCP_INFO's tcpi_data_segs_out; TCP only): retransmits_total over this is the retransmit ratio."+perClient+overflow),
		rtt: d("rtt_seconds",
			"Round-trip times of TCP connections, one sample per round trip (before Linux 6.10, the smoothed RTT at each round trip), in seconds (TCP only)."+perClient+overflow),
		open: d("connections",
			"Connections open now: established (TCP: handshake completed) and not closed."+overflow),
		opened: d("connections_opened_total",
			"Connections that became established (TCP: handshake completed); connections open before the tracer started are not counted."+perClient+overflow),
		closed: d("connections_closed_total",
			"Established connections that closed."+perClient+overflow),
		failed: d("connection_failures_total",
			"TCP connections that closed without ever being established (failed connects, TCP only)."+perClient+overflow),
		nameInfo: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "remote_name_info"),
			"A name DNS answers on this host gave a remote address of this client's view (always 1); join with group_left on remote_addr.",
			[]string{"remote_addr", "name"}, nil),
		namesDropped: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "remote_names_dropped"),
			"Names of this scrape's view not exported as conntrace_remote_name_info: past --collector.max-series of them.",
			nil, nil),
		seriesCount: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "series"),
			"Label sets of the traffic metrics held for this scrape's client (client_id), the overflow series not included; at most --collector.max-series.",
			nil, nil),
		seriesLimit: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "series_limit"),
			"Label sets of the traffic metrics held per client at most (--collector.max-series); not exported when unlimited.",
			nil, nil),
		overflow: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "series_overflow_total"),
			`Connections counted into the overflow series (labels all "overflow") because their label set found --collector.max-series reached; each connection once.`+perClient,
			nil, nil),
	}
}

func (d *descs) describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{
		d.sent, d.recv, d.retransmits, d.segments, d.rtt, d.open, d.opened, d.closed, d.failed,
		d.seriesCount, d.seriesLimit, d.overflow, d.nameInfo, d.namesDropped,
	} {
		ch <- desc
	}
}

// metricsPerSeries is how many metrics a TCP label set yields.
const metricsPerSeries = 9

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
			counter(d.segments, s.segments),
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
	keys   keyMaker
	expiry time.Duration
	now    func() time.Time
	logger log.Logger
	// maxSeries bounds the label sets per client (0: no bound).
	maxSeries int
	// overflowLabels are the label values of the overflow series.
	overflowLabels []string

	// failedScrapes counts the scrapes that failed after the source
	// handed their deltas over (see scrape).
	failedScrapes atomic.Uint64

	mu      sync.Mutex
	clients map[string]*clientState
}

func newExporter(src Source, o *options) *exporter {
	return &exporter{
		src:            src,
		descs:          newDescs(o.labels.Names()),
		keys:           keyMaker{labels: o.labels, group: o.group},
		expiry:         o.expiry,
		now:            o.now,
		logger:         o.logger,
		maxSeries:      max(o.maxSeries, 0),
		overflowLabels: overflowValues(o.labels),
		clients:        make(map[string]*clientState),
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
// in the source, and those the source dropped itself (expired, or evicted
// for a new client): what the collector holds is bounded by what the
// source holds. RemoveClient is called under e.mu, so that a new scrape of
// the same client cannot start between the two.
func (e *exporter) expireLocked(now time.Time) {
	for id, st := range e.clients {
		if st.users > 0 || !st.live {
			continue
		}
		switch {
		case e.expiry > 0 && now.Sub(st.lastSeen) > e.expiry:
			delete(e.clients, id)
			e.src.RemoveClient(id)
			level.Debug(e.logger).Log("msg", "Client expired", "client", id, "last_scrape", st.lastSeen)
		case !e.src.HasClient(id):
			delete(e.clients, id)
			level.Debug(e.logger).Log("msg", "Client dropped by the tracer", "client", id, "last_scrape", st.lastSeen)
		}
	}
}

// clientCount returns the number of clients the collector holds.
func (e *exporter) clientCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.clients)
}

// overflowSeries returns the client's overflow series, made on first use.
func (e *exporter) overflowSeries(st *clientState) *series {
	if st.overflow == nil {
		st.overflow = &series{labels: e.overflowLabels}
	}
	return st.overflow
}

// newSeries returns the series of a label set not seen yet: a new one, or
// the overflow series once the client has maxSeries. A label set that goes
// to the overflow series is not remembered: while the cap is reached (it
// stays reached, series are never dropped) it goes there again.
//
// A label set whose values are those of the overflow series (only a
// process named "overflow" as the only label) would collide with it: it is
// counted in the overflow series, and remembered there.
func (e *exporter) newSeries(st *clientState, k labelKey) *series {
	if e.maxSeries > 0 && len(st.list) >= e.maxSeries {
		return e.overflowSeries(st)
	}
	values := k.values(e.keys.labels)
	if len(values) > 0 && slices.Equal(values, e.overflowLabels) {
		s := e.overflowSeries(st)
		st.series[k] = s
		return s
	}
	s := &series{labels: values}
	st.series[k] = s
	st.list = append(st.list, s)
	return s
}

// countOverflow counts a connection of the view that goes to the overflow
// series, once per connection. It returns whether the connection is kept
// in overflowConns (still open).
func (st *clientState) countOverflow(c *tracer.ConnectionStats) bool {
	if st.overflowConns == nil {
		st.overflowConns = make(map[tracer.ConnKey]uint64)
	}
	if _, ok := st.overflowConns[c.Key]; !ok {
		st.overflowTotal++
	}
	if c.Closed {
		delete(st.overflowConns, c.Key)
		return false
	}
	st.overflowConns[c.Key] = st.gen
	return true
}

// scrape reads clientID's view from the source, adds its deltas into the
// client's counters, and returns the client's const metrics.
//
// A scrape either completes or restarts the client: everything that can
// fail (the label sets, the address groups: code that runs for every
// connection) runs before the first counter changes, and a panic anywhere
// after the source handed the deltas over drops the client on both sides,
// since those deltas cannot be given back. The next scrape is then a new
// client's first (Prometheus sees a counter reset), not a repeat of the
// failure; lost_total{reason="scrape_failed"} counts the restarts.
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
	defer func() {
		if p := recover(); p != nil {
			ms, err = nil, e.restart(clientID, st, p)
		}
	}()
	st.keys = e.keysOf(st.keys[:0], conns.Conns)
	e.count(st, conns)
	return e.metrics(st, conns.DNS), nil
}

// restart drops a client whose scrape failed with p, here and in the
// source, and returns the scrape's error. Callers hold st.mu.
func (e *exporter) restart(clientID string, st *clientState, p any) error {
	st.reset()
	st.series = nil // the next scrape resets it, whatever the source says
	e.src.RemoveClient(clientID)
	e.failedScrapes.Add(1)
	level.Error(e.logger).Log("msg", "Scrape failed, client restarted", "client", clientID, "err", p, "stack", string(debug.Stack()))
	return fmt.Errorf("scrape of client %q failed, the client restarts: %v", clientID, p)
}

// keysOf appends the label set of every connection to keys. It changes no
// state: whatever fails here fails before any counter moved.
func (e *exporter) keysOf(keys []labelKey, conns []tracer.ConnectionStats) []labelKey {
	for i := range conns {
		keys = append(keys, e.keys.key(&conns[i]))
	}
	return keys
}

// count adds the view's deltas into the client's series; st.keys holds the
// label set of each connection of the view.
func (e *exporter) count(st *clientState, conns *tracer.Connections) {
	if conns.NewClient || st.series == nil {
		// The source (re)created the client's state: its series restart.
		st.reset()
	}
	for _, s := range st.list {
		s.open = 0
	}
	if st.overflow != nil {
		st.overflow.open = 0
	}
	st.gen++
	inOverflow := 0 // open connections of the view in overflowConns
	for i := range conns.Conns {
		c := &conns.Conns[i]
		k := st.keys[i]
		s := st.series[k]
		if s == nil {
			s = e.newSeries(st, k)
		}
		if s == st.overflow && st.countOverflow(c) {
			inOverflow++
		}
		s.add(c)
	}
	if len(st.overflowConns) > inOverflow {
		// Some left the view without a close record (lost, or timed out
		// in the tracer): forget them.
		for key, gen := range st.overflowConns {
			if gen != st.gen {
				delete(st.overflowConns, key)
			}
		}
	}
}

// metrics returns the client's const metrics, and the info series of the
// names of its view's peers.
func (e *exporter) metrics(st *clientState, dns map[netip.Addr][]string) []prometheus.Metric {
	ms := make([]prometheus.Metric, 0, (len(st.list)+1)*metricsPerSeries+3)
	for _, s := range st.list {
		ms = e.descs.appendMetrics(ms, s)
	}
	if st.overflow != nil {
		ms = e.descs.appendMetrics(ms, st.overflow)
	}
	d := e.descs
	ms = append(ms,
		prometheus.MustNewConstMetric(d.seriesCount, prometheus.GaugeValue, float64(len(st.list))),
		prometheus.MustNewConstMetric(d.overflow, prometheus.CounterValue, float64(st.overflowTotal)),
	)
	if e.maxSeries > 0 {
		ms = append(ms, prometheus.MustNewConstMetric(d.seriesLimit, prometheus.GaugeValue, float64(e.maxSeries)))
	}
	// Names of the view's peers, as their own info series, so that names
	// never multiply the traffic series: join with group_left. They come
	// from outside (DNS answers), so at most maxSeries of them, the same
	// ones from scrape to scrape (address, then name order).
	addrs := slices.SortedFunc(maps.Keys(dns), netip.Addr.Compare)
	named, dropped := 0, 0
	for _, addr := range addrs {
		for _, n := range dns[addr] {
			if e.maxSeries > 0 && named >= e.maxSeries {
				dropped++
				continue
			}
			named++
			ms = append(ms, prometheus.MustNewConstMetric(d.nameInfo, prometheus.GaugeValue, 1, addr.String(), labelSafe(n)))
		}
	}
	ms = append(ms, prometheus.MustNewConstMetric(d.namesDropped, prometheus.GaugeValue, float64(dropped)))
	return ms
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
