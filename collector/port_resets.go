package collector

import (
	"strconv"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
)

// portResetCollector exports the resets this host sent for segments no
// connection took, per local port (tracer.PortResets): a port nothing
// listens on answers each SYN with one. The same for every client, so in
// the shared registry; only where the kernel shows them (Linux 6.10+).
type portResetCollector struct {
	src       Source
	maxSeries int
	logger    log.Logger

	resets, dropped *prometheus.Desc
}

func newPortResetCollector(src Source, maxSeries int, logger log.Logger) *portResetCollector {
	return &portResetCollector{
		src: src, maxSeries: maxSeries, logger: logger,
		resets: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "resets_no_connection_total"),
			"TCP resets (RST) sent for segments no connection took, by local port and network namespace: no socket on the port (nothing listens: a refused connect, a scan), a listener's (an ACK without a handshake), a TIME_WAIT or a pending handshake's socket; since start-up (Linux 6.10+; a port idle for 30 minutes leaves the kernel's table, its count kept by the exporter: README).",
			[]string{"netns", "port"}, nil),
		dropped: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "resets_no_connection_ports_dropped"),
			"Ports of conntrace_resets_no_connection_total not exported by this scrape: past --collector.max-series of them (the lowest namespaces and ports are kept).", nil, nil),
	}
}

func (c *portResetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.resets
	ch <- c.dropped
}

func (c *portResetCollector) Collect(ch chan<- prometheus.Metric) {
	rs, ok, err := c.src.PortResets()
	if !ok {
		return
	}
	if err != nil {
		level.Warn(c.logger).Log("msg", "reading the resets per port", "err", err)
		return
	}
	dropped := 0
	if c.maxSeries > 0 && len(rs) > c.maxSeries {
		dropped, rs = len(rs)-c.maxSeries, rs[:c.maxSeries]
	}
	for _, r := range rs {
		ch <- prometheus.MustNewConstMetric(c.resets, prometheus.CounterValue, float64(r.Resets),
			strconv.FormatUint(uint64(r.NetNS), 10), strconv.FormatUint(uint64(r.Port), 10))
	}
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.GaugeValue, float64(dropped))
}
