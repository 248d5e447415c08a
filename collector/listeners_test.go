package collector

import (
	"errors"

	"github.com/go-kit/log"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// Each listening port's values as read, its process name made valid
// UTF-8 (it is whatever the process called itself) and escaped; ports past
// --collector.max-series are counted, not exported; and what was read is
// exported when some namespace could not be.
func TestListenerMetrics(t *testing.T) {
	src := newFakeSource()
	src.listeners = []tracer.ListenerStats{
		{NetNS: 1, Port: 80, Comm: "ng\"inx\n\xff", Sockets: 1, QueueLength: 2, QueueLimit: 1, Drops: 6, SynAckRetransmits: 1},
		{NetNS: 2, Port: 443, Comm: "envoy", Sockets: 4, QueueLength: 0, QueueLimit: 4096},
	}
	src.listenErr = errors.New("listeners of network namespace /proc/9/ns/net: operation not permitted")
	c := newListenerCollector(src, 1, log.NewNopLogger())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP conntrace_listen_ports_dropped Listening ports not exported by this scrape: past --collector.max-series of them.
# TYPE conntrace_listen_ports_dropped gauge
conntrace_listen_ports_dropped 1
`), "conntrace_listen_ports_dropped"); err != nil {
		t.Error(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 0 {
				continue
			}
			if m.GetLabel()[2].GetValue() != "ng\"inx\n\uFFFD" || m.GetLabel()[0].GetValue() != "1" {
				t.Errorf("%s: labels %v", mf.GetName(), m.GetLabel())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[mf.GetName()] = v
		}
	}
	for name, v := range map[string]float64{
		"conntrace_listen_queue_length": 2, "conntrace_listen_queue_limit": 1, "conntrace_listen_drops_total": 6,
		"conntrace_listen_synack_retransmits_total": 1, "conntrace_listen_sockets": 1,
	} {
		if got[name] != v {
			t.Errorf("%s = %v, want %v", name, got[name], v)
		}
	}
	if len(got) != 5 {
		t.Errorf("%d labelled families, want 5 (one port): %v", len(got), got)
	}
}
