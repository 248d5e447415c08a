package collector

import (
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// healthCollector exports the tracer's own health. It has no client
// dimension: every scraper sees the same values.
type healthCollector struct {
	src   Source
	state stateHealth
	// failedScrapes is the collector's own loss (nil: none), exported as
	// lost_total{reason="scrape_failed"}.
	failedScrapes *atomic.Uint64

	tracked, trackedLimit, lost, clients *prometheus.Desc

	progInfo, progRuns, progRunTime, progMisses *prometheus.Desc
	probeHits, probeMisses                      *prometheus.Desc
	capability                                  *prometheus.Desc
	dnsUnsolicited                              *prometheus.Desc
	closeErrors                                 *prometheus.Desc
	cgroups                                     cgroupHealth
}

// lostScrapeFailed is the reason of lost_total that the collector counts:
// a scrape that failed after the tracer handed its deltas over, so that its
// client restarted.
const lostScrapeFailed = "scrape_failed"

// stateHealth is what the health metrics read of the per-client state.
type stateHealth interface {
	Clients() int
	Lost() map[string]uint64
}

func newHealthCollector(src Source, state stateHealth, failedScrapes *atomic.Uint64) *healthCollector {
	return &healthCollector{
		src:           src,
		state:         state,
		failedScrapes: failedScrapes,
		cgroups:       newCgroupHealth(),
		tracked: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "tracked_connections"),
			"TCP connections (protocol tcp) and UDP flows (protocol udp) tracked in the kernel now; each is bounded by conntrace_tracked_connections_limit.", []string{"protocol"}, nil),
		trackedLimit: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "tracked_connections_limit"),
			"TCP connections, and separately UDP flows, the kernel can track (--tracer.max-tracked-connections); "+
				`connections beyond it are counted in conntrace_lost_total{reason="tracked_connections_full"}.`, nil, nil),
		lost: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "lost_total"),
			"Events the tracer could not count, by reason: tracked_connections_full (new connection not traced), "+
				"ring_buffer_full (last delta of a closed connection), "+
				"client_state_full (no longer counted: a client holds nothing per connection; always 0), client_rejected (scrape of a new client refused), client_evicted (a client that never came back after its first scrape, dropped for a new one), "+
				"decode_error (kernel record not decoded), conntrack_state_full and conntrack_error (NAT not read), "+
				"dns_ring_buffer_full, dns_malformed and dns_cache_full (DNS answers not read, or not kept), recursion_misses (BPF program runs the kernel skipped), socket_storage_error (new TCP connection not traced: no socket storage), udp_flow_expiring (a UDP call that raced the closing of its idle flow, at most), listener_read_error (a network namespace whose listening ports a scrape could not read), scrape_failed (a scrape failed after taking its deltas: its client restarted).", []string{"reason"}, nil),
		clients: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "clients"),
			"Scrape clients (scraper address, with its client_id if given) whose counters are held.", nil, nil),
		progInfo: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "bpf_program_info"),
			"A BPF program of the tracer (always 1): the hook it is attached to, and how.", []string{"program", "hook", "attach"}, nil),
		progRuns: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "bpf_program_runs_total"),
			"Runs of the program, counted by the kernel while its BPF statistics are on (--tracer.bpf-stats).", []string{"program"}, nil),
		progRunTime: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "bpf_program_run_seconds_total"),
			"Time spent in the program, counted by the kernel while its BPF statistics are on (--tracer.bpf-stats).", []string{"program"}, nil),
		progMisses: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "bpf_program_misses_total"),
			"Runs of the program the kernel skipped because another BPF program was running on the CPU (recursion misses).", []string{"program"}, nil),
		probeHits: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "probe_hits"),
			"Hits of a kprobe, from kprobe_profile (every tool's probes); absent where the file is not readable.", []string{"probe"}, nil),
		capability: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "kernel_capability"),
			"1 if the kernel offered this capability at start-up, 0 if not (see the start-up log and README for what each costs).", []string{"capability"}, nil),
		dnsUnsolicited: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "dns_unsolicited_answers_total"),
			"DNS answers not read because they answer no query this host sent (same socket and transaction id, within 10 s): forged, or late duplicates.", nil, nil),
		closeErrors: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "connection_errors_total"),
			"TCP connections traced since start-up that closed with an error on their socket, by the kernel's error number (errno): names what reason=\"other\" of connection_failures_total and connection_aborts_total was. Since start-up, the same for every client.", []string{"errno"}, nil),
		probeMisses: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "probe_misses"),
			"Misses of a kprobe, from kprobe_profile; absent where the file is not readable.", []string{"probe"}, nil),
	}
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.tracked
	ch <- c.trackedLimit
	ch <- c.lost
	ch <- c.clients
	ch <- c.progInfo
	ch <- c.progRuns
	ch <- c.progRunTime
	ch <- c.progMisses
	ch <- c.probeHits
	ch <- c.probeMisses
	ch <- c.capability
	ch <- c.dnsUnsolicited
	ch <- c.closeErrors
	c.cgroups.describe(ch)
}

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	if s.Lost == nil {
		s.Lost = map[string]uint64{}
	}
	for r, n := range c.state.Lost() {
		s.Lost[r] += n
	}
	ch <- prometheus.MustNewConstMetric(c.tracked, prometheus.GaugeValue, float64(s.TrackedConnections), "tcp")
	ch <- prometheus.MustNewConstMetric(c.tracked, prometheus.GaugeValue, float64(s.TrackedUDPFlows), "udp")
	ch <- prometheus.MustNewConstMetric(c.trackedLimit, prometheus.GaugeValue, float64(s.TrackedConnectionsLimit))
	ch <- prometheus.MustNewConstMetric(c.clients, prometheus.GaugeValue, float64(c.state.Clients()))
	ch <- prometheus.MustNewConstMetric(c.dnsUnsolicited, prometheus.CounterValue, float64(s.DNSUnsolicited))
	c.cgroups.collect(ch, &s)
	for errno, n := range s.CloseErrors {
		ch <- prometheus.MustNewConstMetric(c.closeErrors, prometheus.CounterValue, float64(n), tracer.ErrnoName(errno))
	}

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
	var failed uint64
	if c.failedScrapes != nil {
		failed = c.failedScrapes.Load()
	}
	ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(failed), lostScrapeFailed)

	for _, p := range s.Programs {
		ch <- prometheus.MustNewConstMetric(c.progInfo, prometheus.GaugeValue, 1, p.Program, p.Hook, p.Attach)
		ch <- prometheus.MustNewConstMetric(c.progMisses, prometheus.CounterValue, float64(p.RecursionMisses), p.Program)
		if p.Enabled { // without the kernel's statistics they would read 0
			ch <- prometheus.MustNewConstMetric(c.progRuns, prometheus.CounterValue, float64(p.Runs), p.Program)
			ch <- prometheus.MustNewConstMetric(c.progRunTime, prometheus.CounterValue, p.RunTime.Seconds(), p.Program)
		}
	}
	for _, k := range s.Support {
		v := 0.0
		if k.Available {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.capability, prometheus.GaugeValue, v, k.Name)
	}
	for name, h := range s.Probes {
		ch <- prometheus.MustNewConstMetric(c.probeHits, prometheus.GaugeValue, float64(h.Hits), name)
		ch <- prometheus.MustNewConstMetric(c.probeMisses, prometheus.GaugeValue, float64(h.Misses), name)
	}
}
