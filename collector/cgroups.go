package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// cgroupHealth exports how well the cgroups of connections are named:
// only when they are (a workload label is selected, or a cgroup filter
// is set: tracer.Stats.Cgroups).
type cgroupHealth struct {
	named, misses, walks, dropped, tooDeep *prometheus.Desc
}

func newCgroupHealth() cgroupHealth {
	return cgroupHealth{
		named: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "cgroups_named"),
			"Cgroups the exporter holds the name of now (removed ones included, for an hour), at most 16384.", nil, nil),
		misses: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "cgroup_misses_total"),
			"Connections whose cgroup could not be named (gone before it was, or not held): their cgroup, unit, container_id and pod_uid labels are empty.", nil, nil),
		walks: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "cgroup_walks_total"),
			"Walks of the whole cgroup v2 hierarchy: two at start-up, then for a cgroup not known or after lost cgroup events (at most one every 10 seconds).", nil, nil),
		dropped: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "cgroups_dropped_total"),
			"Cgroups not held because the cache was full of live ones (16384, or 16 MiB of paths), or the share of those below a directory not owned by root was (a quarter of each), or deeper than 64 levels; counted at each walk that met them: their connections count in conntrace_cgroup_misses_total.", nil, nil),
		tooDeep: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "cgroup_filter_too_deep_total"),
			"Connections and UDP flows whose socket is more than 63 levels below the cgroup root: the cgroup filter looks no further up, and traces them whatever it says of the cgroups above.", nil, nil),
	}
}

func (c cgroupHealth) describe(ch chan<- *prometheus.Desc) {
	ch <- c.named
	ch <- c.misses
	ch <- c.walks
	ch <- c.dropped
	ch <- c.tooDeep
}

func (c cgroupHealth) collect(ch chan<- prometheus.Metric, s *tracer.Stats) {
	if s.Cgroups == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.named, prometheus.GaugeValue, float64(s.Cgroups.Entries))
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(s.Cgroups.Misses))
	ch <- prometheus.MustNewConstMetric(c.walks, prometheus.CounterValue, float64(s.Cgroups.Scans))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.Cgroups.Dropped))
	ch <- prometheus.MustNewConstMetric(c.tooDeep, prometheus.CounterValue, float64(s.CgroupFilterTooDeep))
}
