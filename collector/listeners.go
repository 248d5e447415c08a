package collector

import (
	"strconv"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
)

// listenerCollector exports how saturated each listening TCP port is, read
// from the kernel at each scrape (tracer.Listeners): the same for every
// client, so in the shared registry.
type listenerCollector struct {
	src       Source
	maxSeries int
	logger    log.Logger

	queue, limit, drops, synAcks, sockets, dropped *prometheus.Desc
}

var listenerLabels = []string{"netns", "port", "process"}

func newListenerCollector(src Source, maxSeries int, logger log.Logger) *listenerCollector {
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	const of = ". Summed over the port's listening sockets in its network namespace (several with SO_REUSEPORT, or one per address); process is its latest listener's, where traced."
	return &listenerCollector{
		src: src, maxSeries: maxSeries, logger: logger,
		queue:   d("listen_queue_length", "Connections established and not yet accepted now (accept queue, ss -lnt's Recv-Q)"+of, listenerLabels),
		limit:   d("listen_queue_limit", "Connections the accept queue holds before the kernel drops (the listen() backlog capped by net.core.somaxconn; ss -lnt's Send-Q)"+of, listenerLabels),
		drops:   d("listen_drops_total", "Packets the listening sockets dropped (ss -lntm's skmem d): SYNs and handshake ACKs that found the accept queue full (an ACK counts twice: the packet, and the connection), and others with room in it (TCP_DEFER_ACCEPT's bare ACKs, a pending handshake's SYN again, filtered packets); the drops of a socket closed stay in the port's count while it has one"+of, listenerLabels),
		synAcks: d("listen_synack_retransmits_total", "SYN-ACKs sent again, their handshake's last ACK not having come (or having found the accept queue full), since the port's first listener was traced"+of, listenerLabels),
		sockets: d("listen_sockets", "Listening sockets on the port"+of, listenerLabels),
		dropped: d("listen_ports_dropped", "Listening ports not exported by this scrape: past --collector.max-series of them.", nil),
	}
}

func (c *listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queue, c.limit, c.drops, c.synAcks, c.sockets, c.dropped} {
		ch <- d
	}
}

func (c *listenerCollector) Collect(ch chan<- prometheus.Metric) {
	ls, err := c.src.Listeners()
	if err != nil {
		// What was read is still exported; the namespaces that were not
		// are counted in lost_total{reason="listener_read_error"}.
		level.Debug(c.logger).Log("msg", "reading the listening ports", "err", err)
	}
	dropped := 0
	if c.maxSeries > 0 && len(ls) > c.maxSeries {
		dropped, ls = len(ls)-c.maxSeries, ls[:c.maxSeries]
	}
	for _, l := range ls {
		labels := []string{strconv.FormatUint(uint64(l.NetNS), 10), strconv.FormatUint(uint64(l.Port), 10), labelSafe(l.Comm)}
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(l.QueueLength), labels...)
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(l.QueueLimit), labels...)
		ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(l.Drops), labels...)
		ch <- prometheus.MustNewConstMetric(c.synAcks, prometheus.CounterValue, float64(l.SynAckRetransmits), labels...)
		ch <- prometheus.MustNewConstMetric(c.sockets, prometheus.GaugeValue, float64(l.Sockets), labels...)
	}
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.GaugeValue, float64(dropped))
}
