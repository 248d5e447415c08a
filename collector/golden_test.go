package collector

import (
	"bytes"
	"flag"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/conntrace/conntrace_exporter/internal/testenv"
	"github.com/conntrace/conntrace_exporter/tracer"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenScenario fills src with connections of every kind, for a client
// whose first scrape sees them already open; next() then changes them as
// between two scrapes.
func goldenScenario(src *fakeSource) (next func()) {
	// Outgoing TCP/IPv4 to a service on 443, with RTT samples in the
	// first exported bucket (<= 8µs), in the middle and above 2^24µs.
	c1 := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.10:443")
	c1.Preexisting = true
	// Incoming TCP/IPv6 on local port 8080 from an ephemeral port.
	c3 := conn(3, tracer.TCP, tracer.INCOMING, "[2001:db8::1]:8080", "[2001:db8::2]:51000")
	// An IPv4 connection on an IPv6 socket: v4-mapped addresses.
	c4 := conn(4, tracer.TCP, tracer.OUTGOING, "[::ffff:10.0.0.1]:40002", "[::ffff:198.51.100.7]:5432")
	// UDP: a flow to a DNS server (direction none: the remote port is
	// the service), one to a local DNS server (incoming: the local port);
	// and a local TCP connection.
	c6 := conn(6, tracer.UDP, tracer.NONE, "10.0.0.1:40003", "192.0.2.53:53")
	c7 := conn(7, tracer.TCP, tracer.LOCAL, "127.0.0.1:45000", "127.0.0.1:9090")
	c8 := conn(8, tracer.UDP, tracer.INCOMING, "10.0.0.1:53", "192.0.2.77:41000")
	for i, c := range []tracer.ConnectionStats{c1, c3, c4, c6, c7, c8} {
		c.Monotonic.SentBytes = 123456 // before the client's first scrape: never counted
		c.Pid, c.Comm, c.NetNS = uint32(1000+i%2), []string{"curl", "named"}[i%2], 4026531840
		src.set(c)
	}

	return func() {
		src.update(c1.Key, func(c *tracer.ConnectionStats) {
			c.Monotonic.SentBytes += 1000
			c.Monotonic.RecvBytes += 5000
			c.Monotonic.Retransmits += 2
			c.Monotonic.SentSegments += 7
			// Its losses: one timeout, one fast recovery, and what
			// TCP_INFO counts of them (no reordering: not exported).
			// A reset sent and one taken, and 1.5 s sending, 0.25 s of
			// them limited by the peer's window (jiffies of 4 ms).
			c.Monotonic.Detail = tracer.Detail[uint32]{RetransBytes: 2896, RTOs: 1, Recoveries: 1, DSACKs: 1, OOOPackets: 3, CEMarks: 5,
				ResetsSent: 1, ResetsReceived: 1, BusyJiffies: 375, RwndLimitedJiffies: 62}
			// Stalled on the peer's zero window now.
			c.ZeroWindow = true
			c.Monotonic.RTT.Buckets[0] += 1  // <= 1µs
			c.Monotonic.RTT.Buckets[3] += 1  // <= 8µs
			c.Monotonic.RTT.Buckets[10] += 3 // <= 1.024ms
			c.Monotonic.RTT.Buckets[24] += 1 // <= 16.777216s
			c.Monotonic.RTT.Buckets[25] += 1 // > 2^24µs: +Inf only
			c.Monotonic.RTT.SumMicros += 1 + 7 + 3*1000 + 16_000_000 + 20_000_000
		})
		// A second connection to the same service: same label set. It
		// opens and closes between the scrapes.
		c2 := conn(2, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40001", "192.0.2.10:443")
		c2.Monotonic.SentBytes, c2.Monotonic.RecvBytes = 200, 300
		c2.Monotonic.RTT.Buckets[9] = 2
		c2.Monotonic.RTT.SumMicros = 2 * 400
		c2.Pid, c2.Comm, c2.NetNS = 1000, "curl", 4026531840
		// The peer resets it: closed, and aborted. Its handshake took
		// 2 ms, then it lived 43.998 s: a handshake and a duration.
		c2.End, c2.Errno = tracer.ReasonReset, 104
		c2.HandshakeMicros, c2.StartEpoch = 2000, 1_000_000_000
		src.set(c2)
		src.mu.Lock()
		src.ktime = max(src.ktime, 45_000_000_000-1)
		src.mu.Unlock()
		src.close(c2.Key)
		// Failed connects: refused, twice timed out (one after an ICMP
		// error), and one to the first service, timed out: samples by
		// reason, sorted with the reason among the labels.
		for i, f := range []struct {
			dst    string
			reason tracer.Reason
		}{
			{"203.0.113.9:80", tracer.ReasonRefused},
			{"203.0.113.9:80", tracer.ReasonTimeout},
			{"203.0.113.9:80", tracer.ReasonHostUnreachable},
			{"192.0.2.10:443", tracer.ReasonTimeout},
		} {
			c5 := conn(uint64(50+i), tracer.TCP, tracer.OUTGOING, "10.0.0.1:40004", f.dst)
			c5.Established = false
			c5.End = f.reason
			c5.Pid, c5.Comm, c5.NetNS = 1002, "wget", 4026532000
			src.set(c5)
			src.close(c5.Key)
		}
		src.update(c3.Key, func(c *tracer.ConnectionStats) {
			c.Monotonic.SentBytes += 70
			c.Monotonic.RecvBytes += 7000
		})
		src.update(c4.Key, func(c *tracer.ConnectionStats) { c.Monotonic.RecvBytes += 44 })
		src.update(c6.Key, func(c *tracer.ConnectionStats) {
			c.Monotonic.SentBytes += 60
			c.Monotonic.RecvBytes += 600
		})
		src.update(c8.Key, func(c *tracer.ConnectionStats) {
			c.Monotonic.SentBytes += 80
			c.Monotonic.RecvBytes += 40
		})
		// The local connection closes: its label set stays, gauge 0.
		src.update(c7.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 1 })
		src.close(c7.Key)
		src.stats = tracer.Stats{
			TrackedConnections:      4,
			TrackedUDPFlows:         2,
			TrackedConnectionsLimit: 65536,
			Lost:                    map[string]uint64{tracer.LostRingBufferFull: 3},
			CloseErrors:             map[uint16]uint64{104: 1, 110: 2, 111: 1, 113: 1, 103: 4},
		}
		// A closed port answered two SYNs, a listener one stray ACK.
		src.portResets = []tracer.PortResets{{NetNS: 4026531840, Port: 81, Resets: 2}, {NetNS: 4026531840, Port: 8080, Resets: 1}}
		src.listeners = []tracer.ListenerStats{
			{NetNS: 4026531840, Port: 8080, Comm: "named", Sockets: 2, QueueLength: 3, QueueLimit: 8192, Drops: 17, SynAckRetransmits: 4},
		}
	}
}

var buildInfoRE = regexp.MustCompile(`(?m)^(conntrace_exporter_build_info\{.*\}) 1$`)
var labelValueRE = regexp.MustCompile(`="[^"]*"`)

// normalize replaces what depends on the build (the build info labels).
func normalize(body string) string {
	return buildInfoRE.ReplaceAllStringFunc(body, func(line string) string {
		return labelValueRE.ReplaceAllString(line, `="X"`)
	})
}

// compareGolden compares got with testdata/name, or rewrites it with -update.
func compareGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run go test -update to accept it):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// TestGolden scrapes the handler twice for one client and compares both
// bodies with the golden files: the first scrape of a client counts
// nothing, the second the changes since.
func TestGolden(t *testing.T) {
	src := newFakeSource()
	next := goldenScenario(src)
	h := NewHandler(src, WithExporterMetrics(false))

	code, body := scrape(t, h, "golden")
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	compareGolden(t, "first_scrape.prom", normalize(body))

	next()
	code, body = scrape(t, h, "golden")
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	compareGolden(t, "second_scrape.prom", normalize(body))
}

// TestGoldenAllLabels is TestGolden with every label, address groups and
// a cap of 3 label sets: the overflow series and the series metrics.
func TestGoldenAllLabels(t *testing.T) {
	src := newFakeSource()
	next := goldenScenario(src)
	groups := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("10.0.0.0/8")}
	h := NewHandler(src, WithExporterMetrics(false),
		WithLabels(MustParseLabels("protocol,family,direction,remote_addr,port,process,pid,netns,local_addr")),
		WithAddressGroups(groupsOf(groups...)), WithMaxSeries(3))
	scrape(t, h, "golden")
	next()
	code, body := scrape(t, h, "golden")
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	compareGolden(t, "all_labels_second_scrape.prom", normalize(body))
}

// TestGoldenGatherAndCompare checks the traffic collector alone, through a
// pedantic registry, against the same golden file.
func TestGoldenGatherAndCompare(t *testing.T) {
	src := newFakeSource()
	next := goldenScenario(src)
	o := defaultOptions()
	e := newExporter(src, &o)
	if _, err := e.scrape("golden"); err != nil {
		t.Fatal(err)
	}
	next()

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(trafficCollector{e: e, clientID: "golden"}, newHealthCollector(src, e.state, nil), newListenerCollector(src, o.maxSeries, o.logger))
	want, err := os.ReadFile(filepath.Join("testdata", "second_scrape.prom"))
	if err != nil {
		t.Fatal(err)
	}
	// The golden file also has the build info, which is not registered
	// here: compare the metrics the two collectors yield.
	names := []string{
		"conntrace_sent_bytes_total", "conntrace_received_bytes_total", "conntrace_retransmits_total",
		"conntrace_sent_segments_total", "conntrace_rtt_seconds", "conntrace_connections", "conntrace_connections_opened_total",
		"conntrace_connections_closed_total", "conntrace_connection_failures_total", "conntrace_connection_aborts_total",
		"conntrace_connection_errors_total", "conntrace_handshake_seconds", "conntrace_connection_duration_seconds",
		"conntrace_retransmitted_bytes_total", "conntrace_retransmit_timeouts_total", "conntrace_fast_recoveries_total",
		"conntrace_spurious_retransmits_total", "conntrace_reordering_events_total", "conntrace_out_of_order_packets_total",
		"conntrace_ecn_ce_marks_total", "conntrace_listen_queue_length", "conntrace_listen_queue_limit",
		"conntrace_listen_drops_total", "conntrace_listen_synack_retransmits_total", "conntrace_listen_sockets",
		"conntrace_listen_ports_dropped", "conntrace_tracked_connections", "conntrace_tracked_connections_limit", "conntrace_lost_total",
		"conntrace_clients", "conntrace_series", "conntrace_series_limit", "conntrace_series_overflow_total",
	}
	if err := testutil.GatherAndCompare(reg, bytes.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}

// TestLint runs promlint on every metric the collectors yield.
func TestLint(t *testing.T) {
	src := newFakeSource()
	next := goldenScenario(src)
	o := defaultOptions()
	e := newExporter(src, &o)
	if _, err := e.scrape("lint"); err != nil {
		t.Fatal(err)
	}
	next()
	for name, c := range map[string]prometheus.Collector{
		"traffic":   trafficCollector{e: e, clientID: "lint"},
		"health":    newHealthCollector(src, e.state, nil),
		"listeners": newListenerCollector(src, o.maxSeries, o.logger),
	} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s: %s", name, p.Metric, p.Text)
		}
	}
}

// TestPedanticRegistry registers everything the handler serves in a
// pedantic registry, which checks every metric against its description.
func TestPedanticRegistry(t *testing.T) {
	src := newFakeSource()
	next := goldenScenario(src)
	o := defaultOptions()
	e := newExporter(src, &o)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(trafficCollector{e: e, clientID: "p"}, newHealthCollector(src, e.state, nil))
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	next()
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// TestPromtoolCheckMetrics runs promtool check metrics on the handler's
// whole output, exporter metrics included.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := testenv.Tool(t, "promtool", "/usr/bin/promtool")
	for name, opts := range map[string][]Option{
		"defaults": nil,
		// Every label, groups, and a cap that makes an overflow series.
		"all labels": {
			WithLabels(MustParseLabels("protocol,family,direction,remote_addr,port,process,pid,netns,local_addr")),
			WithAddressGroups(groupsOf(netip.MustParsePrefix("192.0.2.0/24"))), WithMaxSeries(2),
		},
		"no labels": {WithLabels(Labels{})},
	} {
		src := newFakeSource()
		next := goldenScenario(src)
		h := NewHandler(src, opts...)
		scrape(t, h, "promtool")
		next()
		code, body := scrape(t, h, "promtool")
		if code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", name, code, body)
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Fatalf("%s: promtool check metrics: %v\n%s", name, err, out)
		}
	}
}
