package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
	"github.com/conntrace/conntrace_exporter/internal/testenv"
	"github.com/conntrace/conntrace_exporter/mixin"
	"github.com/conntrace/conntrace_exporter/tracer"
)

// The mixin as the test loads it: the retransmit alert with a low
// threshold and no wait, and the exporter-health alerts with no wait, so
// that a healthy exporter proves they stay quiet.
const mixinTestConfig = `{
  retransmitRatioThreshold: 0.001,
  retransmitMinSegmentsPerSecond: 0.1,
  retransmitFor: '0s',
  lostFor: '0s',
  noDataFor: '0s',
  downFor: '0s',
  trackedFor: '0s',
}`

// mixinTestLabels are the exporter's labels in the mixin test: the default
// set and the workload labels the Workloads dashboard reads.
const mixinTestLabels = "protocol,family,direction,remote_addr,port,cgroup,unit,container_id,pod_uid"

// e2eUnit is the systemd service the test's cgroup is shaped as.
const e2eUnit = "conntrace-e2e.service"

// TestMixinAgainstPrometheus: Debian's Prometheus loads the mixin's rules
// and scrapes the exporter while traffic with induced loss runs between
// two namespaces. The retransmit alert fires for the server's address,
// the exporter's own alerts stay quiet, the per-workload rules find the
// test's traffic under the systemd unit of its cgroup, and every dashboard
// query returns data.
func TestMixinAgainstPrometheus(t *testing.T) {
	nettest.RequireRoot(t)
	requireTCP(t)
	prometheus := testenv.Tool(t, prometheusBin)
	bin := testenv.BuildExporter(t)

	r, err := mixin.Render(mixinTestConfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var ruleFiles []string
	for name, body := range map[string][]byte{"rules.yaml": r.Rules, "alerts.yaml": r.Alerts} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Fatal(err)
		}
		ruleFiles = append(ruleFiles, path)
	}

	pair := nettest.NewPair(t)
	ln, err := pair.Listen("tcp4", net.JoinHostPort(serverAddr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pair.DropServerDataSegments(t, ln.Addr().(*net.TCPAddr).Port)
	// Connections the server resets, for the abort panels.
	rst, err := pair.Listen("tcp4", net.JoinHostPort(serverAddr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rst.Close() })

	// A connection whose server never reads, open while the test runs:
	// the zero-window and send-limit panels (made after the exporter
	// starts, so it is traced from its SYN).
	stall, err := pair.Listen("tcp4", net.JoinHostPort(serverAddr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stall.Close() })

	exporterAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	exp := exec.Command(bin, "--web.listen-address="+exporterAddr, "--tracer.bpf-stats", "--collector.labels="+mixinTestLabels)
	expLog := &lineLogger{t: t, prefix: "exporter: "}
	exp.Stderr = expLog
	exporter := start(t, exp)
	exporter.stderr = expLog
	waitHTTP(t, exporter, "http://"+exporterAddr+"/metrics?client_id=readiness", 20*time.Second)
	promBase := startPrometheus(t, prometheus, exporterAddr, ruleFiles...)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	waitPrometheus(ctx, t, promBase, []promCheck{{fmt.Sprintf(`up{job=%q}`, job), 1}}, 20*time.Second)

	// From here the test runs in a cgroup of its own, shaped as a systemd
	// service (the exporter and Prometheus, started before, stay where
	// they were): the sockets it makes from now on (the clients of the
	// stalled connection and of the traffic) carry its unit.
	workloadCgroup := joinServiceCgroup(t, e2eUnit)

	stallConnection(t, pair, stall)

	// Traffic until the test ends: 256 KiB up, 4 KiB down per connection.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			exchange(t, pair, ln, 256<<10, 4<<10)
			failAndAbort(t, pair, rst)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	firing := `ALERTS{alertname="ConntraceHighRetransmitRatio",alertstate="firing",remote_addr="` + serverAddr + `"}`
	waitPrometheus(ctx, t, promBase, []promCheck{{firing, 1}}, 60*time.Second)

	// The per-workload view finds the test's own traffic: bytes a second
	// of its unit, in one workload, the cgroup path the test made.
	workload := fmt.Sprintf(`count(instance_workload:conntrace_bytes:rate5m{job=%q,unit=%q} > 0)`, job, e2eUnit)
	waitPrometheus(ctx, t, promBase, []promCheck{{workload, 1}}, 30*time.Second)
	ws, err := promVector(ctx, promBase, fmt.Sprintf(`instance_workload:conntrace_bytes:rate5m{job=%q,unit=%q}`, job, e2eUnit))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Metric["cgroup"] != workloadCgroup || w.Metric["container_id"] != "" || w.Metric["pod_uid"] != "" {
			t.Errorf("workload of unit %s: labels %v, want cgroup %q and no container or pod", e2eUnit, w.Metric, workloadCgroup)
		}
	}

	// A healthy exporter: none of its own alerts fire, even without a wait.
	for _, name := range []string{"ConntraceLosingData", "ConntraceExporterNoData", "ConntraceExporterDown", "ConntraceTrackedConnectionsNearLimit"} {
		n, err := countOf(ctx, promBase, `ALERTS{alertname="`+name+`"}`)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s is pending or firing for a healthy exporter", name)
		}
	}

	// Every dashboard query returns data (Grafana's variables filled in as
	// a user on the peer dashboard would).
	queries := mixin.DashboardQueries(r, "1m", ".+", serverAddr)
	if len(queries) < 20 {
		t.Fatalf("only %d dashboard queries", len(queries))
	}
	var empty []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		empty = empty[:0]
		for _, q := range queries {
			n, err := countOf(ctx, promBase, q)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				empty = append(empty, q)
			}
		}
		if len(empty) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(empty) > 0 {
		t.Errorf("%d of %d dashboard queries return no data:\n  %s", len(empty), len(queries), strings.Join(empty, "\n  "))
	}
	t.Logf("%d dashboard queries return data; ConntraceHighRetransmitRatio fired for %s; workload %s seen", len(queries), serverAddr, workloadCgroup)
}

// joinServiceCgroup moves the test process (every thread) into a new
// cgroup shaped as systemd runs the service unit,
// <root>/conntrace-e2e-<unique>/system.slice/<unit>, where <root> is the
// first cgroup2 mount, and returns its path relative to <root> (what the
// exporter's cgroup label says). Only sockets made after the move are in
// it. When the test ends the process goes back to the cgroup it was in,
// and the directories are removed, deepest first.
func joinServiceCgroup(t *testing.T, unit string) string {
	t.Helper()
	root, err := tracer.FindCgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	prev, err := ownCgroup2("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	top := fmt.Sprintf("/conntrace-e2e-%d-%d", os.Getpid(), time.Now().UnixNano())
	dirs := []string{top, top + "/system.slice", top + "/system.slice/" + unit}
	rel := dirs[len(dirs)-1]
	t.Cleanup(func() {
		for i := len(dirs) - 1; i >= 0; i-- {
			dir := filepath.Join(root, dirs[i])
			var err error
			for range 50 {
				if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("removing cgroup %s: %v", dir, err)
			}
		}
	})
	if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
		t.Fatalf("making cgroup %s: %v", rel, err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(root, rel, "cgroup.procs"), pid, 0o644); err != nil {
		t.Fatalf("moving the test into cgroup %s: %v", rel, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(root, prev, "cgroup.procs"), pid, 0o644); err != nil {
			t.Errorf("moving the test back into cgroup %s: %v", prev, err)
		}
	})
	t.Logf("test process in cgroup %s (from %s) below %s", rel, prev, root)
	return rel
}

// ownCgroup2 returns the process's cgroup v2 path (the "0::" line of
// /proc/self/cgroup), relative to the cgroup2 mount.
func ownCgroup2(procCgroup string) (string, error) {
	b, err := os.ReadFile(procCgroup)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(path, "/") {
			return path, nil
		}
	}
	return "", fmt.Errorf("no cgroup v2 line (0::) in %s: %q", procCgroup, b)
}

// countOf runs an instant query and returns how many samples it gave.
func countOf(ctx context.Context, base, query string) (int, error) {
	res, err := promVector(ctx, base, query)
	return len(res), err
}

// acceptOne accepts one connection on ln, in the background: nil if the
// accept failed.
func acceptOne(ln net.Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			sc = nil
		}
		accepted <- sc
	}()
	return accepted
}

// failAndAbort makes one refused connect (to a port nothing listens on)
// and one connection the server resets (SO_LINGER 0): data for the
// failure and abort panels.
func failAndAbort(t *testing.T, p *nettest.Pair, rst net.Listener) {
	if c, err := p.Dial("tcp4", net.JoinHostPort(serverAddr, "1")); err == nil {
		c.Close()
		t.Errorf("connect to port 1 of %s succeeded", serverAddr)
	}
	accepted := acceptOne(rst)
	cc, err := p.Dial("tcp4", rst.Addr().String())
	if err != nil {
		t.Errorf("dialling %s: %v", rst.Addr(), err)
		return
	}
	defer cc.Close()
	sc := <-accepted
	if sc == nil {
		return
	}
	sc.(*net.TCPConn).SetLinger(0)
	sc.Close()
	cc.SetReadDeadline(time.Now().Add(10 * time.Second))
	cc.Read(make([]byte, 1))
}

// stallConnection opens a connection to ln whose server never reads, and
// writes until the server's window closes; both ends stay open until the
// test ends.
func stallConnection(t *testing.T, p *nettest.Pair, ln net.Listener) {
	t.Helper()
	accepted := acceptOne(ln)
	small := func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 16384) }); err != nil {
			return err
		}
		return serr
	}
	var cc net.Conn
	if err := nettest.Do(p.Client, func() (err error) {
		cc, err = (&net.Dialer{Control: small}).Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatalf("dialling %s: %v", ln.Addr(), err)
	}
	t.Cleanup(func() { cc.Close() })
	sc := <-accepted
	if sc == nil {
		t.Fatal("accepting the stalled connection failed")
	}
	t.Cleanup(func() { sc.Close() })
	cc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := cc.Write(make([]byte, 64<<20)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing to a server that does not read: %v, want the deadline", err)
	}
}
