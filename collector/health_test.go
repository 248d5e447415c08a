package collector

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/tracer"
)

type healthSource struct {
	staticSource
	stats tracer.Stats
}

func (h healthSource) Stats() tracer.Stats { return h.stats }

// Program info for every program, run statistics only when the kernel
// counts them, probe gauges only where kprobe_profile was read.
func TestHealthProgramsAndProbes(t *testing.T) {
	a := tracer.Attachment{Program: "handle_set_state", Hook: "sock/inet_sock_set_state", Attach: "tp_btf"}
	b := tracer.Attachment{Program: "handle_sockops", Hook: "cgroup /sys/fs/cgroup/unified", Attach: "sockops"}
	src := healthSource{staticSource: staticSource{benchConns(1, 1)}, stats: tracer.Stats{
		Programs: []tracer.ProgramStat{
			{Attachment: a, Runs: 10, RunTime: 3 * time.Microsecond, RecursionMisses: 2, Enabled: true},
			{Attachment: b, Runs: 0, Enabled: true},
		},
		Probes: map[string]tracer.ProbeHits{"ptcp_v4_connect": {Hits: 5, Misses: 1}},
	}}
	body := scrapeBody(t, NewHandler(src))
	for _, want := range []string{
		`conntrace_bpf_program_info{attach="tp_btf",hook="sock/inet_sock_set_state",program="handle_set_state"} 1`,
		`conntrace_bpf_program_info{attach="sockops",hook="cgroup /sys/fs/cgroup/unified",program="handle_sockops"} 1`,
		`conntrace_bpf_program_runs_total{program="handle_set_state"} 10`,
		`conntrace_bpf_program_run_seconds_total{program="handle_set_state"} 3e-06`,
		`conntrace_bpf_program_misses_total{program="handle_set_state"} 2`,
		`conntrace_probe_hits{probe="ptcp_v4_connect"} 5`,
		`conntrace_probe_misses{probe="ptcp_v4_connect"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}
	src.stats.Programs[0].Enabled, src.stats.Programs[1].Enabled, src.stats.Probes = false, false, nil
	body = scrapeBody(t, NewHandler(src))
	for _, absent := range []string{"conntrace_bpf_program_runs_total{", "conntrace_probe_hits{"} {
		if strings.Contains(body, absent) {
			t.Errorf("%s exported without its source", absent)
		}
	}
}

func scrapeBody(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics?client_id=health", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}
