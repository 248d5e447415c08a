package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
	"github.com/conntrace/conntrace_exporter/internal/testenv"
)

// The web configuration the DaemonSet ships (deploy/web-config.yml, its
// placeholder password) makes the exporter ask for basic auth on every
// path: a scrape without it gets 401 and takes no client slot, one with it
// is served (issue 11.15: auth should be easy to require).
func TestWebConfigBasicAuth(t *testing.T) {
	nettest.RequireRoot(t)
	bin := testenv.BuildExporter(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin, "--web.listen-address="+addr, "--web.config.file=../deploy/web-config.yml", "--no-tracer.collect-udp")
	log := &lineLogger{t: t, prefix: "exporter: "}
	cmd.Stderr = log
	p := start(t, cmd)
	p.stderr = log
	url := "http://" + addr + "/metrics?client_id=e2e"
	status := func(user, password string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(20 * time.Second)
	for status("prometheus", "change-me") != http.StatusOK {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("the exporter with deploy/web-config.yml did not serve an authenticated scrape in 20s (exited: %v)", p.exited())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range []struct{ user, password string }{{"", ""}, {"prometheus", "wrong"}, {"someone", "change-me"}} {
		if got := status(c.user, c.password); got != http.StatusUnauthorized {
			t.Errorf("scrape as %q/%q: status %d, want 401", c.user, c.password, got)
		}
	}
}
