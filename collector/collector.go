// Package collector renders each client's view of the connections
// (netstate) as Prometheus metrics.
//
// One scrape is one client's view (see ClientID): the state holds, for
// each client, cumulative counters per label set, so each scraper (each
// Prometheus of an HA pair, say) sees every byte and every closed
// connection exactly once, however the scrapes interleave.
package collector

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/conntrace/conntrace_exporter/cgroup"
	"github.com/conntrace/conntrace_exporter/netstate"
	"github.com/conntrace/conntrace_exporter/tracer"
)

const namespace = "conntrace"

// ClientIDParam is the URL parameter that names the scrape's client.
const ClientIDParam = "client_id"

// Source is what the collector reads: the tracer's snapshots of the live
// connections and the stream of those that leave (given to the state, set
// as its sink), the names of peers, and the tracer's health. The real
// *tracer.Tracer satisfies it; the collector's tests use a fake tracer under
// the real state.
type Source interface {
	netstate.Source
	SetSink(s tracer.Sink)
	Names(addrs []netip.Addr) map[netip.Addr][]string
	Stats() tracer.Stats
	// Listeners reads the listening TCP ports now.
	Listeners() ([]tracer.ListenerStats, error)
	// PortResets reads the resets sent for segments no connection took,
	// per port; ok false where the kernel does not show them.
	PortResets() (resets []tracer.PortResets, ok bool, err error)
	// JiffyMicros is the µs in a jiffy, the unit of tracer.Detail's
	// times; 0 when unknown (they are not exported).
	JiffyMicros() uint64
	// Cgroup names a connection's cgroup (the labels cgroup, unit,
	// container_id, pod_uid); false when unknown.
	Cgroup(id uint64) (cgroup.Info, bool)
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

// rttHistogram returns the sample count, the sum in seconds and the
// cumulative buckets of the exported bounds of the kernel's
// non-cumulative log2 buckets.
func rttHistogram(c *netstate.Counters) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(rttBounds))
	var cum uint64
	for i, v := range c.RTT.Buckets {
		cum += v
		if i >= rttFirstExp && i <= rttLastExp {
			buckets[rttBounds[i-rttFirstExp]] = cum
		}
	}
	return cum, float64(c.RTT.SumMicros) / 1e6, buckets
}

// microsToSeconds is the exported value of a bound in µs: the text
// writer's le pairs (seconds) and the registry's buckets are the same.
func microsToSeconds(us uint64) float64 { return float64(us) / 1e6 }

// seconds are bounds (µs) in seconds.
func seconds(bounds []uint64) []float64 {
	out := make([]float64, len(bounds))
	for i, b := range bounds {
		out[i] = microsToSeconds(b)
	}
	return out
}

// timingHistogram returns the observations' count, their sum in seconds
// and the cumulative buckets by bound (in seconds) of t, whose bounds are
// bounds (µs).
func timingHistogram(t *netstate.Timing, bounds []uint64) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(bounds))
	for i, b := range bounds {
		count += t.Buckets[i]
		buckets[microsToSeconds(b)] = count
	}
	count += t.Buckets[len(bounds)]
	return count, float64(t.SumMicros) / 1e6, buckets
}

// descs are the metric descriptions, built once: as client_golang's
// descriptions, and as names and help texts for the text writer.
type descs struct {
	descFields[*prometheus.Desc]
	names, helps descFields[string]
	// labels are the traffic metrics' label names.
	labels []string
	// jiffyMicros converts the times of detailMetrics (Source.JiffyMicros).
	jiffyMicros uint64
}

// descFields are the traffic metrics (labelled), then the per-client ones.
type descFields[T any] struct {
	sent, recv, retransmits T
	segments                T
	rtt                     T
	open                    T
	opened, closed, failed  T
	aborted                 T
	handshake, duration     T
	zeroWindow              T
	// The counters of tracer.Detail, in detailMetrics' order.
	detail [len(detailMetrics)]T

	// Per client, without labels.
	seriesCount, seriesLimit, overflow T
	nameInfo, namesDropped             T
}

func newDescs(labels []string, jiffyMicros uint64) *descs {
	ds := &descs{labels: labels, jiffyMicros: jiffyMicros}
	d := func(desc **prometheus.Desc, name, help *string, n, h string, labels []string) {
		*name = prometheus.BuildFQName(namespace, "", n)
		*help = h
		*desc = prometheus.NewDesc(*name, h, labels, nil)
	}
	const perClient = " Counted for this scrape's client (client_id) since its first scrape."
	const overflow = ` Label sets beyond --collector.max-series are counted in one series whose labels are all "overflow".`
	d(&ds.sent, &ds.names.sent, &ds.helps.sent, "sent_bytes_total", "Payload bytes sent to the remote end (TCP: payload bytes the peer acknowledged)."+perClient+overflow, labels)
	d(&ds.recv, &ds.names.recv, &ds.helps.recv, "received_bytes_total", "Payload bytes received from the remote end (TCP: in-order payload bytes the kernel received and acknowledged)."+perClient+overflow, labels)
	d(&ds.retransmits, &ds.names.retransmits, &ds.helps.retransmits, "retransmits_total", "TCP segments retransmitted to the remote end (TCP only)."+perClient+overflow, labels)
	d(&ds.segments, &ds.names.segments, &ds.helps.segments, "sent_segments_total", "TCP data segments sent to the remote end, retransmissions included (TCP_INFO's tcpi_data_segs_out; TCP only): retransmits_total over this is the retransmit ratio."+perClient+overflow, labels)
	d(&ds.rtt, &ds.names.rtt, &ds.helps.rtt, "rtt_seconds", "Round-trip times of TCP connections, one sample per round trip (before Linux 6.10, the smoothed RTT at each round trip), in seconds (TCP only)."+perClient+overflow, labels)
	d(&ds.open, &ds.names.open, &ds.helps.open, "connections", "Connections open now: established (TCP: handshake completed) and not closed."+overflow, labels)
	d(&ds.opened, &ds.names.opened, &ds.helps.opened, "connections_opened_total", "Connections that became established (TCP: handshake completed); connections open before the tracer started are not counted."+perClient+overflow, labels)
	d(&ds.closed, &ds.names.closed, &ds.helps.closed, "connections_closed_total", "Established connections that closed."+perClient+overflow, labels)
	const reason = ` By reason, from the kernel's error on the socket at its close (see README); a reason's series appears once it counted a connection.`
	withReason := append(labels[:len(labels):len(labels)], reasonLabel)
	d(&ds.failed, &ds.names.failed, &ds.helps.failed, "connection_failures_total", "TCP connects that never established (TCP only)."+reason+perClient+overflow, withReason)
	d(&ds.handshake, &ds.names.handshake, &ds.helps.handshake, "handshake_seconds", "TCP handshakes, from the SYN sent (outgoing) or received (incoming) to ESTABLISHED, in seconds (TCP only; not for connections found at start-up, nor incoming ones whose SYN was not timed, as with SYN cookies); a label set's histogram appears once it counted one."+perClient+overflow, labels)
	d(&ds.duration, &ds.names.duration, &ds.helps.duration, "connection_duration_seconds", "TCP connections' lives, from ESTABLISHED to their close, counted at the close, in seconds (TCP only; not for connections found at start-up); a label set's histogram appears once it counted one."+perClient+overflow, labels)
	d(&ds.zeroWindow, &ds.names.zeroWindow, &ds.helps.zeroWindow, "zero_window_connections", "TCP connections open now that are stalled on the remote end's zero receive window, data waiting to be sent (its application does not read); a label set's series appears once it had one."+overflow, labels)
	for i, m := range detailMetrics {
		d(&ds.detail[i], &ds.names.detail[i], &ds.helps.detail[i], m.name, m.help+` (TCP only); a label set's series appears once it counts.`+perClient+overflow, labels)
	}
	d(&ds.aborted, &ds.names.aborted, &ds.helps.aborted, "connection_aborts_total", "Established TCP connections that ended with an error on their socket (reset by the peer, timed out, ...): part of connections_closed_total (TCP only)."+reason+perClient+overflow, withReason)
	d(&ds.nameInfo, &ds.names.nameInfo, &ds.helps.nameInfo, "remote_name_info",
		"A name DNS answers on this host gave a remote address of this client's view (always 1); join with group_left on remote_addr.", nameInfoLabels)
	d(&ds.namesDropped, &ds.names.namesDropped, &ds.helps.namesDropped, "remote_names_dropped",
		"Names of this scrape's view not exported as conntrace_remote_name_info: past --collector.max-series of them.", nil)
	d(&ds.seriesCount, &ds.names.seriesCount, &ds.helps.seriesCount, "series",
		"Label sets of the traffic metrics held for this scrape's client (client_id), the overflow series not included; at most --collector.max-series.", nil)
	d(&ds.seriesLimit, &ds.names.seriesLimit, &ds.helps.seriesLimit, "series_limit",
		"Label sets of the traffic metrics held per client at most (--collector.max-series); not exported when unlimited.", nil)
	d(&ds.overflow, &ds.names.overflow, &ds.helps.overflow, "series_overflow_total",
		`Connections counted into the overflow series (labels all "overflow") because their label set found --collector.max-series reached; each connection once.`+perClient, nil)
	return ds
}

func (d *descs) describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{
		d.sent, d.recv, d.retransmits, d.segments, d.rtt, d.open, d.opened, d.closed, d.failed, d.aborted, d.handshake, d.duration,
		d.seriesCount, d.seriesLimit, d.overflow, d.nameInfo, d.namesDropped, d.zeroWindow,
	} {
		ch <- desc
	}
	for _, desc := range d.detail {
		ch <- desc
	}
}

// metricsPerSeries is how many metrics a TCP label set yields.
const metricsPerSeries = 9

// appendMetrics appends the const metrics of one label set.
func (d *descs) appendMetrics(ms []prometheus.Metric, s *netstate.Series) []prometheus.Metric {
	counter := func(desc *prometheus.Desc, v uint64) prometheus.Metric {
		return prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), s.Labels...)
	}
	ms = append(ms,
		counter(d.sent, s.SentBytes),
		counter(d.recv, s.RecvBytes),
		prometheus.MustNewConstMetric(d.open, prometheus.GaugeValue, float64(s.Open), s.Labels...),
		counter(d.opened, s.Opened),
		counter(d.closed, s.Closed),
	)
	if s.TCP {
		count, sum, buckets := rttHistogram(&s.Counters)
		ms = append(ms,
			counter(d.retransmits, s.Retransmits),
			counter(d.segments, s.SentSegments),
			prometheus.MustNewConstHistogram(d.rtt, count, sum, buckets, s.Labels...),
		)
		for _, h := range [...]struct {
			desc   *prometheus.Desc
			t      *netstate.Timing
			bounds []uint64
		}{{d.handshake, &s.Handshakes, netstate.HandshakeBounds}, {d.duration, &s.Durations, netstate.DurationBounds}} {
			if count, sum, buckets := timingHistogram(h.t, h.bounds); count > 0 {
				ms = append(ms, prometheus.MustNewConstHistogram(h.desc, count, sum, buckets, s.Labels...))
			}
		}
		for i := range detailMetrics {
			if v, ok := d.detailValue(i, s); ok {
				ms = append(ms, prometheus.MustNewConstMetric(d.detail[i], prometheus.CounterValue, v, s.Labels...))
			}
		}
		if s.ZeroWindowSeen {
			ms = append(ms, prometheus.MustNewConstMetric(d.zeroWindow, prometheus.GaugeValue, float64(s.ZeroWindow), s.Labels...))
		}
		ms = appendReasons(ms, d.failed, s, &s.Failures)
		ms = appendReasons(ms, d.aborted, s, &s.Aborts)
	}
	return ms
}

// detailMetrics are the counters of TCP label sets beyond bytes and
// retransmits (tracer.Detail): losses, resets, what limited sending. Each
// is exported once it counts: most label sets never see most of them.
var detailMetrics = [...]struct {
	name, help string
	value      func(d *tracer.Detail[uint64]) uint64
	// jiffies: value is in jiffies, exported in seconds; not exported
	// when the kernel's tick rate is unknown.
	jiffies bool
}{
	{"retransmitted_bytes_total", "Bytes retransmitted to the remote end (TCP_INFO's tcpi_bytes_retrans)", func(d *tracer.Detail[uint64]) uint64 { return d.RetransBytes }, false},
	{"retransmit_timeouts_total", "Retransmission timeouts: each time a connection's retransmission timer fired, the last one (which gives up) included; not for connections found at start-up", func(d *tracer.Detail[uint64]) uint64 { return d.RTOs }, false},
	{"fast_recoveries_total", "Fast recovery entries: losses repaired from duplicate ACKs or SACKs, without a timeout (Linux 6.4+: the tcp_cong_state_set tracepoint)", func(d *tracer.Detail[uint64]) uint64 { return d.Recoveries }, false},
	{"spurious_retransmits_total", "D-SACKs the remote end sent: segments it received twice, retransmissions that were not needed (TCP_INFO's tcpi_dsack_dups)", func(d *tracer.Detail[uint64]) uint64 { return d.DSACKs }, false},
	{"reordering_events_total", "Reorderings the connection detected (TCP_INFO's tcpi_reord_seen)", func(d *tracer.Detail[uint64]) uint64 { return d.Reorders }, false},
	{"out_of_order_packets_total", "Packets received out of order (TCP_INFO's tcpi_rcv_ooopack)", func(d *tracer.Detail[uint64]) uint64 { return d.OOOPackets }, false},
	{"ecn_ce_marks_total", "Segments the remote end acknowledged with ECN-Echo: CE (congestion experienced) marks on the way; with classic ECN the echo lasts until the sender's CWR, so more segments than marks (TCP_INFO's tcpi_delivered_ce)", func(d *tracer.Detail[uint64]) uint64 { return d.CEMarks }, false},
	{"resets_sent_total", "TCP resets (RST) sent to the remote end: for a segment the connection could not take, or to abort it (close() with unread data, SO_LINGER 0, ss -K)", func(d *tracer.Detail[uint64]) uint64 { return d.ResetsSent }, false},
	{"resets_received_total", "TCP resets (RST) taken from the remote end: a refused connect's, an established connection's; also the kernel's abort of a connection that received data after it was shut down for reading, which sends one", func(d *tracer.Detail[uint64]) uint64 { return d.ResetsReceived }, false},
	{"send_busy_seconds_total", "Time TCP connections had data in flight or waiting to be sent, in seconds, the time limited by the receive window or the send buffer included (TCP_INFO's tcpi_busy_time)", func(d *tracer.Detail[uint64]) uint64 { return d.BusyJiffies }, true},
	{"send_rwnd_limited_seconds_total", "Time TCP connections could not send because the remote end's receive window was full, in seconds (TCP_INFO's tcpi_rwnd_limited): the remote application reads too slowly, or its receive buffer is smaller than the path's bandwidth-delay product", func(d *tracer.Detail[uint64]) uint64 { return d.RwndLimitedJiffies }, true},
	{"send_sndbuf_limited_seconds_total", "Time TCP connections could not send more because the local send buffer was full, in seconds (TCP_INFO's tcpi_sndbuf_limited): the socket's SO_SNDBUF or net.ipv4.tcp_wmem bounds the throughput", func(d *tracer.Detail[uint64]) uint64 { return d.SndbufLimitedJiffies }, true},
}

// detailValue is the exported value of detailMetrics[i] for s, and
// whether it is exported: once it counts, and for times, when the
// kernel's tick rate is known. Times are converted as TCP_INFO does
// (jiffies times µs per jiffy), then to seconds.
func (d *descs) detailValue(i int, s *netstate.Series) (float64, bool) {
	m := &detailMetrics[i]
	v := m.value(&s.Detail)
	switch {
	case v == 0:
		return 0, false
	case !m.jiffies:
		return float64(v), true
	case d.jiffyMicros == 0:
		return 0, false
	}
	return microsToSeconds(v * d.jiffyMicros), true
}

// reasonLabel names the reason of conntrace_connection_failures_total and
// conntrace_connection_aborts_total.
const reasonLabel = "reason"

// appendReasons appends a counter per reason that counted a connection:
// the reasons of a label set with none are not exported (nine series per
// label set that never failed would be most of a scrape).
func appendReasons(ms []prometheus.Metric, desc *prometheus.Desc, s *netstate.Series, by *[tracer.NumReasons]uint64) []prometheus.Metric {
	for r, n := range by {
		if n == 0 {
			continue
		}
		values := append(s.Labels[:len(s.Labels):len(s.Labels)], tracer.Reason(r).String())
		ms = append(ms, prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(n), values...))
	}
	return ms
}

// exporter renders each client's view of the state.
type exporter struct {
	src    Source
	state  *netstate.State[labelKey]
	descs  *descs
	now    func() time.Time
	logger log.Logger
	// maxSeries bounds the label sets per client (0: no bound).
	maxSeries int
	// sortedLabels are the indexes of the label values in label name
	// order (the registry's order of samples, see textFamilies).
	sortedLabels []int
	// reasonNames are the label names of the families by reason: the
	// traffic metrics' and reason.
	reasonNames []string

	// failedScrapes counts the scrapes that failed after the state
	// counted their view (see scrape).
	failedScrapes atomic.Uint64
}

// labeler is the collector's netstate.Labeler: the selected labels and
// address groups.
type labeler struct {
	keys     keyMaker
	overflow []string
	names    []string // the label names
}

func (l *labeler) Key(c *tracer.ConnectionStats) labelKey { return l.keys.key(c) }
func (l *labeler) Values(k labelKey) []string             { return k.values(l.keys.labels) }
func (l *labeler) Overflow() []string                     { return l.overflow }
func (l *labeler) Text(values []string) string            { return labelText(l.names, values) }

func newExporter(src Source, o *options) *exporter {
	lab := &labeler{keys: keyMaker{labels: o.labels, group: o.group, cgroups: src.Cgroup}, overflow: overflowValues(o.labels), names: o.labels.Names()}
	e := &exporter{
		src:       src,
		descs:     newDescs(o.labels.Names(), src.JiffyMicros()),
		now:       o.now,
		logger:    o.logger,
		maxSeries: max(o.maxSeries, 0),
	}
	e.sortedLabels = sortedOrder(o.labels.Names())
	e.reasonNames = append(o.labels.Names(), reasonLabel)
	e.state = netstate.New[labelKey](src, lab, netstate.Config{
		MaxClients:   o.maxClients,
		ClientExpiry: o.expiry,
		MaxSeries:    max(o.maxSeries, 0),
		Now:          o.now,
	})
	src.SetSink(e.state)
	return e
}

// scrape returns clientID's view as const metrics.
//
// A scrape either completes or restarts the client: a panic anywhere (the
// label sets, the address groups: code that runs for every connection)
// drops the client, whose counters may have moved halfway. The next
// scrape is then a new client's first (Prometheus sees a counter reset),
// not a repeat of the failure; lost_total{reason="scrape_failed"} counts
// the restarts.
func (e *exporter) scrape(clientID string) ([]prometheus.Metric, error) {
	v, dns, err := e.view(clientID)
	if err != nil {
		return nil, err
	}
	return e.metrics(v, dns), nil
}

// view returns clientID's view and the names of its peers (see scrape).
func (e *exporter) view(clientID string) (v *netstate.View, dns map[netip.Addr][]string, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, dns, err = nil, nil, e.restart(clientID, p)
		}
	}()
	v, err = e.state.Scrape(clientID, e.now())
	if err != nil {
		return nil, nil, fmt.Errorf("cannot get the connections of client %q: %w", clientID, err)
	}
	return v, e.src.Names(v.Addrs), nil
}

// restart drops a client whose scrape failed with p, and returns the
// scrape's error.
func (e *exporter) restart(clientID string, p any) error {
	e.state.RemoveClient(clientID)
	e.failedScrapes.Add(1)
	level.Error(e.logger).Log("msg", "Scrape failed, client restarted", "client", clientID, "err", p, "stack", string(debug.Stack()))
	return fmt.Errorf("scrape of client %q failed, the client restarts: %v", clientID, p)
}

// metrics returns the view's const metrics, and the info series of the
// names of its peers.
func (e *exporter) metrics(v *netstate.View, dns map[netip.Addr][]string) []prometheus.Metric {
	ms := make([]prometheus.Metric, 0, len(v.Series)*metricsPerSeries+3)
	for i := range v.Series {
		ms = e.descs.appendMetrics(ms, &v.Series[i])
	}
	d := e.descs
	ms = append(ms,
		prometheus.MustNewConstMetric(d.seriesCount, prometheus.GaugeValue, float64(v.Own)),
		prometheus.MustNewConstMetric(d.overflow, prometheus.CounterValue, float64(v.OverflowConns)),
	)
	if e.maxSeries > 0 {
		ms = append(ms, prometheus.MustNewConstMetric(d.seriesLimit, prometheus.GaugeValue, float64(e.maxSeries)))
	}
	names, dropped := e.keptNames(dns)
	for _, n := range names {
		ms = append(ms, prometheus.MustNewConstMetric(d.nameInfo, prometheus.GaugeValue, 1, n.addr, n.name))
	}
	ms = append(ms, prometheus.MustNewConstMetric(d.namesDropped, prometheus.GaugeValue, float64(dropped)))
	return ms
}

// peerName is one conntrace_remote_name_info series: an address and a
// name, as label values.
type peerName struct{ addr, name string }

// keptNames returns the names of the view's peers exported as their own
// info series (so that names never multiply the traffic series: join with
// group_left), and how many are not. They come from outside (DNS answers),
// so at most maxSeries of them, the same ones from scrape to scrape
// (address, then name order).
func (e *exporter) keptNames(dns map[netip.Addr][]string) (names []peerName, dropped int) {
	for _, addr := range slices.SortedFunc(maps.Keys(dns), netip.Addr.Compare) {
		for _, n := range dns[addr] {
			if e.maxSeries > 0 && len(names) >= e.maxSeries {
				dropped++
				continue
			}
			names = append(names, peerName{addr.String(), labelSafe(n)})
		}
	}
	return names, dropped
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
