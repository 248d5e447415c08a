package collector

import (
	"github.com/conntrace/conntrace_exporter/tracer"
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

// nat_remote_addr is the real peer behind a NAT, else the remote address.
func TestNATRemoteAddrLabel(t *testing.T) {
	conns := benchConns(2, 2)
	vip, real := conns.Conns[0].Dest, netip.MustParseAddr("198.18.9.9")
	conns.Conns[0].IPTranslation = &tracer.IPTranslation{ReplSrcIP: real, ReplSrcPort: 8080}
	labels, err := ParseLabels("remote_addr,nat_remote_addr")
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(staticSource{conns}, WithLabels(labels))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics?client_id=nat", nil))
	body := rec.Body.String()
	other := conns.Conns[1].Dest
	for _, want := range []string{
		`conntrace_sent_bytes_total{nat_remote_addr="` + real.String() + `",remote_addr="` + vip.String() + `"}`,
		`conntrace_sent_bytes_total{nat_remote_addr="` + other.String() + `",remote_addr="` + other.String() + `"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s in:\n%s", want, body)
		}
	}
}

// The name series are bounded by --collector.max-series too: DNS answers
// come from outside, and a view of many named peers must not multiply the
// scrape. The same names are kept from one scrape to the next (in address
// and name order), and the rest is counted (issue 11.14).
func TestRemoteNameInfoBounded(t *testing.T) {
	conns := benchConns(3, 3)
	conns.DNS = map[netip.Addr][]string{}
	for i, c := range conns.Conns {
		conns.DNS[c.Dest] = []string{"a" + string(rune('0'+i)) + ".example", "b" + string(rune('0'+i)) + ".example"}
	}
	h := NewHandler(staticSource{conns}, WithMaxSeries(4))
	var first string
	for i := range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics?client_id=names", nil))
		body := rec.Body.String()
		var names []string
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "conntrace_remote_name_info{") {
				names = append(names, line)
			}
		}
		if len(names) != 4 {
			t.Fatalf("scrape %d: %d name series, want 4 (--collector.max-series)", i, len(names))
		}
		if !strings.Contains(body, "conntrace_remote_names_dropped 2\n") {
			t.Errorf("scrape %d: want conntrace_remote_names_dropped 2 in:\n%s", i, body)
		}
		if got := strings.Join(names, "\n"); i == 0 {
			first = got
		} else if got != first {
			t.Errorf("scrape %d kept other names:\n%s\nwant\n%s", i, got, first)
		}
	}
}
