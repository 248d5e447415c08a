package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/deploy"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
	"github.com/conntrace/conntrace_exporter/internal/testenv"
)

var requiredCaps = []string{"BPF", "PERFMON", "NET_ADMIN"}

// setprivArgs runs bin as uid 0 with only caps in its bounding set: root
// without any other capability, as in a container with capabilities
// dropped and these added.
func setprivArgs(caps []string, bin string, args ...string) []string {
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(c)
	}
	return append([]string{"--bounding-set=" + set, "--inh-caps=-all", bin}, args...)
}

// TestLeastPrivileges runs the exporter with the capabilities of
// deploy/daemonset.yaml and with only the required ones: both count real
// traffic between two namespaces exactly; the second says what it lacks
// and cannot read NAT in the other namespaces. Without a required one, or
// with --tracer.bpf-stats but no CAP_SYS_ADMIN, it exits 1 naming it.
func TestLeastPrivileges(t *testing.T) {
	nettest.RequireRoot(t)
	requireTCP(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to drop capabilities: %v", err)
	}
	ds, err := deploy.ReadDaemonSet(deploy.DaemonSetFile())
	if err != nil {
		t.Fatal(err)
	}
	deployed := ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add
	bin := testenv.BuildExporter(t)

	t.Run("DaemonSetCapabilities", func(t *testing.T) {
		log, lost := countWithCapabilities(t, setpriv, bin, deployed, false)
		if strings.Contains(log, `msg="capability missing"`) {
			t.Errorf("with %v, start-up says a capability is missing:\n%s", deployed, log)
		}
		if lost != 0 {
			t.Errorf(`conntrace_lost_total{reason="conntrack_error"} = %v with %v, want 0`, lost, deployed)
		}
	})
	t.Run("RequiredOnly", func(t *testing.T) {
		log, lost := countWithCapabilities(t, setpriv, bin, requiredCaps, true)
		for _, c := range []string{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"} {
			if !strings.Contains(log, `msg="capability missing"`) || !strings.Contains(log, c) {
				t.Errorf("start-up does not say %s is missing:\n%s", c, log)
			}
		}
		if lost == 0 {
			t.Errorf(`conntrace_lost_total{reason="conntrack_error"} = 0 without CAP_SYS_ADMIN: the namespaces it could not enter are not counted`)
		}
	})
	t.Run("MissingOne", func(t *testing.T) {
		for _, c := range []struct {
			caps []string
			args []string
			want string
		}{
			{[]string{"PERFMON", "NET_ADMIN"}, nil, "CAP_BPF"},
			{[]string{"BPF", "NET_ADMIN"}, nil, "CAP_PERFMON"},
			{[]string{"BPF", "PERFMON"}, nil, "CAP_NET_ADMIN"},
			{requiredCaps, []string{"--tracer.bpf-stats"}, "--tracer.bpf-stats"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			var stderr bytes.Buffer
			args := append([]string{"--web.listen-address=127.0.0.1:0"}, c.args...)
			cmd := exec.CommandContext(ctx, setpriv, setprivArgs(c.caps, bin, args...)...)
			cmd.Stderr = &stderr
			err := cmd.Run()
			cancel()
			if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), c.want) {
				t.Errorf("with %v %v: exit %d (%v), want 1 and a message naming %s:\n%s", c.caps, c.args, code, err, c.want, stderr.String())
			}
		}
	})
}

// countWithCapabilities starts the exporter with caps, exchanges data
// between two namespaces, and checks both ends are counted exactly. It
// returns the exporter's log and conntrace_lost_total{reason="conntrack_error"},
// watched for longer than the conntrack interval (5s), or until it is
// above 0 when expectErrors.
func countWithCapabilities(t *testing.T, setpriv, bin string, caps []string, expectErrors bool) (string, float64) {
	t.Helper()
	pair := nettest.NewPair(t)
	ln, err := pair.Listen("tcp4", net.JoinHostPort(serverAddr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(setpriv, setprivArgs(caps, bin, "--web.listen-address="+addr)...)
	expLog := &lineLogger{t: t, prefix: "exporter: "}
	cmd.Stderr = expLog
	p := start(t, cmd)
	p.stderr = expLog
	url := "http://" + addr + "/metrics?client_id=privileges"
	waitHTTP(t, p, url, 20*time.Second)

	const sent, recv = 300_000, 7_000
	exchange(t, pair, ln, sent, recv)
	out := map[string]string{"direction": "outgoing", "remote_addr": serverAddr, "port": port}
	in := map[string]string{"direction": "incoming", "remote_addr": clientAddr, "port": port}
	var got [4]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs := scrape(t, url)
		got[0], _ = sumOf(mfs, "conntrace_sent_bytes_total", out)
		got[1], _ = sumOf(mfs, "conntrace_received_bytes_total", out)
		got[2], _ = sumOf(mfs, "conntrace_sent_bytes_total", in)
		got[3], _ = sumOf(mfs, "conntrace_received_bytes_total", in)
		if got == [4]float64{sent, recv, recv, sent} {
			// Each scrape looks the new connections up in their
			// namespaces' conntrack tables, dumped at most every 5s.
			var lost float64
			for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
				lost, _ = sumOf(scrape(t, url), "conntrace_lost_total", map[string]string{"reason": "conntrack_error"})
				if lost > 0 && expectErrors {
					break
				}
			}
			t.Logf("with %v: traffic exact, conntrack_error %v", caps, lost)
			return expLog.String(), lost
		}
		if time.Now().After(deadline) {
			t.Fatalf("with %v: client sent/received %v/%v, server %v/%v; want %d/%d and %d/%d",
				caps, got[0], got[1], got[2], got[3], sent, recv, recv, sent)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
