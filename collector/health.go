package collector

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// healthCollector exports the tracer's own health. It has no client
// dimension: every scraper sees the same values.
type healthCollector struct {
	src Source

	tracked, trackedLimit, lost, clients *prometheus.Desc
}

func newHealthCollector(src Source) *healthCollector {
	return &healthCollector{
		src: src,
		tracked: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "tracked_connections"),
			"Connections tracked in the kernel's connection map now.", nil, nil),
		trackedLimit: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "tracked_connections_limit"),
			"Connections the kernel's connection map can track (--tracer.max-tracked-connections); "+
				`connections beyond it are counted in conntrace_lost_total{reason="tracked_connections_full"}.`, nil, nil),
		lost: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "lost_total"),
			"Events the tracer could not count, by reason: tracked_connections_full (new connection not traced), "+
				"ring_buffer_full (last delta of a closed connection), closed_buffer_full (a client missed a closed connection's last delta), "+
				"client_state_full (a client missed a connection's traffic), client_rejected (scrape of a new client refused), "+
				"decode_error (kernel record not decoded).", []string{"reason"}, nil),
		clients: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "clients"),
			"Scrape clients (client_id, else scraper address) whose per-client state the tracer holds.", nil, nil),
	}
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tracked
	ch <- c.trackedLimit
	ch <- c.lost
	ch <- c.clients
}

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	ch <- prometheus.MustNewConstMetric(c.tracked, prometheus.GaugeValue, float64(s.TrackedConnections))
	ch <- prometheus.MustNewConstMetric(c.trackedLimit, prometheus.GaugeValue, float64(s.TrackedConnectionsLimit))
	ch <- prometheus.MustNewConstMetric(c.clients, prometheus.GaugeValue, float64(s.Clients))

	// Every known reason, 0 if absent; then any reason the tracer added
	// that this list does not know yet, so that nothing is hidden.
	for _, r := range tracer.LostReasons {
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(s.Lost[r]), r)
	}
	var extra []string
	for r := range s.Lost {
		if !slices.Contains(tracer.LostReasons, r) {
			extra = append(extra, r)
		}
	}
	slices.Sort(extra)
	for _, r := range extra {
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(s.Lost[r]), r)
	}
}
