package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
	"github.com/conntrace/conntrace_exporter/internal/testenv"
)

// BenchmarkChurn measures what issue 12 asks of the exporter: 100,000 short
// connections between two namespaces at the fastest rate 16 dialers reach,
// one client that scraped once before, and its next scrape 30 s after
// that one. It reports the rate, what the scrape counted against the truth
// (openings, closings and bytes of both ends; losses by reason), the
// exporter's peak RSS and its CPU per connection.
//
//	go test -run '^$' -bench Churn -benchtime=1x ./e2e/
func BenchmarkChurn(b *testing.B) {
	nettest.RequireRoot(b)
	requireTCP(b)
	bin := testenv.BuildExporter(b)
	for b.Loop() {
		churn(b, bin, 100000, 16)
	}
}

func churn(b *testing.B, bin string, conns, dialers int) {
	const size = 100
	pair := nettest.NewPair(b)
	if err := pair.WidenClientPorts(); err != nil {
		b.Fatal(err)
	}
	ln, err := pair.Listen("tcp4", net.JoinHostPort(serverAddr, "0"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	go func() { // the server: read size, answer size, close
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, size)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(buf)
				}
			}()
		}
	}()

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	cmd := exec.Command(bin, "--web.listen-address="+addr, "--log.level=warn")
	log := &lineLogger{t: b, prefix: "exporter: "}
	cmd.Stderr = log
	exp := start(b, cmd)
	exp.stderr = log
	url := "http://" + addr + "/metrics?client_id=churn"
	waitHTTP(b, exp, url, 20*time.Second) // the client's first scrape
	first := time.Now()
	cpu0 := cpuTicks(b, exp.cmd.Process.Pid)

	var wg sync.WaitGroup
	errs := make(chan error, dialers)
	began := time.Now()
	for d := range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- nettest.Do(pair.Client, func() error {
				buf := make([]byte, size)
				for i := d; i < conns; i += dialers {
					c, err := net.Dial("tcp4", ln.Addr().String())
					if err != nil {
						return err
					}
					if _, err := c.Write(buf); err != nil {
						c.Close()
						return err
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						c.Close()
						return err
					}
					c.Close()
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatalf("a dialer: %v", err)
		}
	}
	elapsed := time.Since(began)
	time.Sleep(time.Until(first.Add(30 * time.Second)))
	mfs := scrape(b, url)
	cpu := cpuTicks(b, exp.cmd.Process.Pid) - cpu0

	client := map[string]string{"direction": "outgoing", "remote_addr": serverAddr, "port": port}
	server := map[string]string{"direction": "incoming", "remote_addr": clientAddr, "port": port}
	report := func(name, metric string, sel map[string]string, want float64) {
		v, _ := sumOf(mfs, metric, sel)
		b.ReportMetric(v-want, name+"-minus-truth")
	}
	for _, end := range []struct {
		name string
		sel  map[string]string
	}{{"client", client}, {"server", server}} {
		report(end.name+"-opened", "conntrace_connections_opened_total", end.sel, float64(conns))
		report(end.name+"-closed", "conntrace_connections_closed_total", end.sel, float64(conns))
		report(end.name+"-sent", "conntrace_sent_bytes_total", end.sel, float64(conns*size))
		report(end.name+"-received", "conntrace_received_bytes_total", end.sel, float64(conns*size))
	}
	var lost []string
	if mf := mfs["conntrace_lost_total"]; mf != nil {
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v > 0 {
				lost = append(lost, fmt.Sprintf("%s=%g", m.GetLabel()[0].GetValue(), v))
			}
		}
	}
	lostSum, _ := sumOf(mfs, "conntrace_lost_total", nil)
	b.ReportMetric(lostSum, "lost")
	b.ReportMetric(float64(conns)/elapsed.Seconds(), "conns/s")
	b.ReportMetric(float64(peakRSS(b, exp.cmd.Process.Pid))/1024, "peak-RSS-MiB")
	b.ReportMetric(float64(cpu)*1e6/100/float64(conns), "cpu-µs/conn") // 100 ticks a second
	b.Logf("%d connections in %s; lost: %s", conns, elapsed.Round(time.Millisecond), strings.Join(lost, " "))
}

// cpuTicks is the user and system CPU time of process pid, in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command (which may hold spaces) in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// peakRSS is the peak resident set of process pid (VmHWM), in KiB.
func peakRSS(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
