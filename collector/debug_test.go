package collector

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/conntrace/conntrace_exporter/tracer"
)

type debugSource struct {
	conns *tracer.Connections
	ports *tracer.PortMapping
}

func (d debugSource) DebugNetworkMaps() (*tracer.Connections, error) { return d.conns, nil }
func (d debugSource) PortMapping() *tracer.PortMapping               { return d.ports }

func get(t *testing.T, h http.Handler, url string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
	return rec.Code, rec.Body.String()
}

func TestDebugEndpoints(t *testing.T) {
	conns := benchConns(2, 2)
	metrics := NewHandler(staticSource{conns}, WithExporterMetrics(false))
	if _, err := metrics.e.scrape("prom"); err != nil {
		t.Fatal(err)
	}
	h := NewDebugHandler(debugSource{conns: conns}, metrics.State())

	code, body := get(t, h, "/debug/net_maps")
	if code != 200 || strings.Count(body, "\n") != 2 || !strings.Contains(body, "cookie:") || !strings.Contains(body, "[TCP]") {
		t.Errorf("net_maps: %d\n%s", code, body)
	}
	code, body = get(t, h, "/debug/net_state?client_id=prom")
	var dump map[string]map[string]any
	if err := json.Unmarshal([]byte(body), &dump); code != 200 || err != nil || len(dump) != 2 {
		t.Errorf("net_state: %d %v %d entries\n%s", code, err, len(dump), body)
	}
	code, body = get(t, h, "/debug/stats")
	if code != 200 || !strings.Contains(body, `"clients"`) {
		t.Errorf("stats: %d\n%s", code, body)
	}
	code, body = get(t, h, "/debug/ports")
	if code != 200 || body != "" {
		t.Errorf("ports without a mapping: %d\n%s", code, body)
	}
	for _, u := range []string{"/debug/pprof/", "/debug/vars", "/debug/pprof/cmdline"} {
		if code, _ := get(t, h, u); code != 200 {
			t.Errorf("%s: status %d", u, code)
		}
	}
}

// /debug/ports lists the listening ports of each network namespace, one a
// line, sorted.
func TestDebugPorts(t *testing.T) {
	pm := tracer.NewPortMapping("/proc")
	for _, k := range []tracer.PortKey{
		{NetNS: 4026532000, Port: 53, Type: tracer.UDP},
		{NetNS: 4026531840, Port: 9476, Type: tracer.TCP},
		{NetNS: 4026532000, Port: 8080, Type: tracer.TCP},
		{NetNS: 4026531840, Port: 22, Type: tracer.TCP},
		{NetNS: 4026532000, Port: 5353, Type: tracer.UDP},
	} {
		pm.AddMapping(k)
	}
	h := NewDebugHandler(debugSource{conns: &tracer.Connections{}, ports: pm}, NewHandler(newFakeSource(), WithExporterMetrics(false)).State())
	code, body := get(t, h, "/debug/ports")
	want := "netns 4026531840 tcp 22,9476\nnetns 4026532000 tcp 8080 udp 53,5353\n"
	if code != 200 || body != want {
		t.Errorf("ports: %d\n%s\nwant\n%s", code, body, want)
	}
}
