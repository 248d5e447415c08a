package collector

import (
	"net/http"
	"testing"

	"github.com/conntrace/conntrace_exporter/cgroup"
	"github.com/conntrace/conntrace_exporter/tracer"
)

const (
	testContainer = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testPod       = "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"
)

// The workload labels come from the namer (the tracer's cgroup names):
// the path, and what it shows of a unit, a container, a pod; an unknown
// cgroup leaves them empty; two cgroups of one unit (a service restarted:
// a new cgroup, a new id, the same path) are one series.
func TestWorkloadLabels(t *testing.T) {
	src := newFakeSource()
	podPath := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_aaaa_bbbb_cccc_0123456789ab.slice/cri-containerd-" + testContainer + ".scope"
	src.cgroups = map[uint64]cgroup.Info{
		10: cgroup.Describe("/system.slice/nginx.service"),
		11: cgroup.Describe("/system.slice/nginx.service"), // restarted
		20: cgroup.Describe(podPath),
	}
	h := NewHandler(src, WithExporterMetrics(false), WithLabels(MustParseLabels("protocol,cgroup,unit,container_id,pod_uid")))
	mustScrape(t, h, "c")
	for i, id := range []uint64{10, 11, 20, 99} {
		c := conn(uint64(i+1), tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
		c.Cgroup = id
		c.Monotonic.SentBytes = 100 * uint64(i+1)
		src.set(c)
	}
	src.close(tracer.ConnKey{Cookie: 1}) // closed: still counted under its labels
	s := mustScrape(t, h, "c")
	for _, tc := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"cgroup": "/system.slice/nginx.service", "unit": "nginx.service", "container_id": "", "pod_uid": ""}, 300},
		{map[string]string{"cgroup": podPath, "unit": "cri-containerd-" + testContainer + ".scope", "container_id": testContainer, "pod_uid": testPod}, 300},
		{map[string]string{"cgroup": "", "unit": "", "container_id": "", "pod_uid": ""}, 400},
	} {
		if got := s.find(t, "conntrace_sent_bytes_total", tc.labels); got != tc.want {
			t.Errorf("sent bytes of %v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if n := len(s.series("conntrace_sent_bytes_total")); n != 3 {
		t.Errorf("%d series of conntrace_sent_bytes_total, want 3", n)
	}
}

// Cgroup names are bytes whoever may make a cgroup chose: one that is not
// valid UTF-8 must not fail a scrape, and its traffic is counted under
// the name with each invalid byte replaced by U+FFFD.
func TestWorkloadLabelsInvalidUTF8(t *testing.T) {
	src := newFakeSource()
	src.cgroups = map[uint64]cgroup.Info{7: cgroup.Describe("/system.slice/caf\xc3.service")}
	h := NewHandler(src, WithExporterMetrics(false), WithLabels(MustParseLabels("cgroup,unit")))
	mustScrape(t, h, "c")
	c := conn(1, tracer.UDP, tracer.NONE, "10.0.0.1:40000", "192.0.2.1:53")
	c.Cgroup = 7
	c.Monotonic.SentBytes = 42
	src.set(c)
	if code, body := scrape(t, h, "c"); code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	src.update(c.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes = 50 })
	s := mustScrape(t, h, "c")
	if got := s.find(t, "conntrace_sent_bytes_total", map[string]string{"cgroup": "/system.slice/caf\uFFFD.service", "unit": "system.slice"}); got != 50 {
		t.Errorf("sent bytes = %v, want 50 (caf\\xc3.service is no valid unit name: the slice is the unit)", got)
	}
}
