package collector

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// Names come as their own info series, one per address and name, and never
// as a label of the traffic series.
func TestRemoteNameInfo(t *testing.T) {
	conns := benchConns(3, 2)
	a := conns.Conns[0].Dest
	conns.DNS = map[netip.Addr][]string{a: {"db.example", "db-primary.example"}}
	h := NewHandler(staticSource{conns})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics?client_id=names", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`conntrace_remote_name_info{name="db.example",remote_addr="` + a.String() + `"} 1`,
		`conntrace_remote_name_info{name="db-primary.example",remote_addr="` + a.String() + `"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}
	if n := strings.Count(body, "conntrace_remote_name_info{"); n != 2 {
		t.Errorf("%d name series, want 2", n)
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "conntrace_sent_bytes_total{") && strings.Contains(line, "name=") {
			t.Errorf("a traffic series carries a name: %s", line)
		}
	}
}
