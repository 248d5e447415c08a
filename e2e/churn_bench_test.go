package e2e

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
	"github.com/conntrace/conntrace_exporter/internal/testenv"
)

// BenchmarkChurn measures what issue 12 asks of the exporter: 100,000 short
// connections between two namespaces at the fastest rate 16 dialers reach;
// clients that scraped once before (one, or 16 that also scrape during the
// churn, each at its own interval: 2 s, 2.5 s, ... 9.5 s), and the next
// scrape of each 30 s after the first. It reports the rate, what the last
// scrapes counted against the truth (openings, closings and bytes of both
// ends; the worst client), losses, the exporter's peak RSS, its CPU per
// connection and its share of one core from the first scrape to the last.
//
//	go test -run '^$' -bench Churn -benchtime=1x ./e2e/
func BenchmarkChurn(b *testing.B) {
	nettest.RequireRoot(b)
	requireTCP(b)
	bin := testenv.BuildExporter(b)
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			for b.Loop() {
				churn(b, bin, 100000, 16, clients)
			}
		})
	}
}

func churn(b *testing.B, bin string, conns, dialers, clients int) {
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
	args := []string{"--web.listen-address=" + addr, "--log.level=warn"}
	if prof := os.Getenv("CHURN_PROFILE"); prof != "" {
		args = append(args, "--debug.listen-address=127.0.0.1:19477")
	}
	// CHURN_ARGS adds flags, to compare configurations.
	args = append(args, strings.Fields(os.Getenv("CHURN_ARGS"))...)
	cmd := exec.Command(bin, args...)
	log := &lineLogger{t: b, prefix: "exporter: "}
	cmd.Stderr = log
	exp := start(b, cmd)
	exp.stderr = log
	// Each client scrapes from an address of its own (127.0.0.10 and up),
	// as separate Prometheus servers do: one address holds at most
	// max(4, --tracer.max-clients/4) clients.
	urls := make([]string, clients)
	hcs := make([]*http.Client, clients)
	for i := range urls {
		urls[i] = fmt.Sprintf("http://%s/metrics?client_id=churn-%d", addr, i)
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i))}
		hcs[i] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: (&net.Dialer{LocalAddr: local}).DialContext,
		}}
	}
	waitHTTP(b, exp, "http://"+addr+"/", 20*time.Second) // the landing page: no client
	scrapeWith := func(i int) (map[string]*dto.MetricFamily, error) {
		body, err := getWith(hcs[i], urls[i])
		if err != nil {
			return nil, err
		}
		return parseMetrics(body)
	}
	for i := range urls {
		if _, err := scrapeWith(i); err != nil { // every client's first scrape
			b.Fatal(err)
		}
	}
	first := time.Now()
	cpu0 := cpuTicks(b, exp.cmd.Process.Pid)
	// The clients but the first scrape during the churn, each at its own
	// interval, until it ends.
	stop := make(chan struct{})
	var scrapers sync.WaitGroup
	for i := 1; i < clients; i++ {
		scrapers.Add(1)
		go func() {
			defer scrapers.Done()
			tick := time.NewTicker(2*time.Second + time.Duration(i-1)*500*time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := scrapeWith(i); err != nil {
						b.Errorf("scrape of client %d: %v", i, err)
					}
				}
			}
		}()
	}

	if prof := os.Getenv("CHURN_PROFILE"); prof != "" {
		// A CPU profile of the exporter over the churn's first 10 s.
		go func() {
			resp, err := http.Get("http://127.0.0.1:19477/debug/pprof/profile?seconds=10")
			if err != nil {
				b.Errorf("profile: %v", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(prof)
			if err != nil {
				b.Errorf("profile: %v", err)
				return
			}
			defer f.Close()
			io.Copy(f, resp.Body)
		}()
	}
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
	if heap := os.Getenv("CHURN_HEAP"); heap != "" && os.Getenv("CHURN_PROFILE") != "" {
		// The exporter's heap right after the churn.
		if resp, err := http.Get("http://127.0.0.1:19477/debug/pprof/heap"); err == nil {
			if f, err := os.Create(heap); err == nil {
				io.Copy(f, resp.Body)
				f.Close()
			}
			resp.Body.Close()
		}
	}
	close(stop)
	scrapers.Wait()
	time.Sleep(time.Until(first.Add(30 * time.Second)))
	var all []map[string]*dto.MetricFamily
	for i := range urls {
		mfs, err := scrapeWith(i)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, mfs)
	}
	cpu := cpuTicks(b, exp.cmd.Process.Pid) - cpu0
	wall := time.Since(first)
	mfs := all[0]

	client := map[string]string{"direction": "outgoing", "remote_addr": serverAddr, "port": port}
	server := map[string]string{"direction": "incoming", "remote_addr": clientAddr, "port": port}
	// The worst client's difference from the truth, per measure (the one
	// farthest from 0).
	report := func(name, metric string, sel map[string]string, want float64) {
		worst := 0.0
		for _, m := range all {
			v, _ := sumOf(m, metric, sel)
			if d := v - want; math.Abs(d) > math.Abs(worst) {
				worst = d
			}
		}
		b.ReportMetric(worst, name+"-minus-truth")
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
	b.ReportMetric(float64(cpu)/100/wall.Seconds()*100, "cpu-%-core") // 100 ticks a second
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
