package collector

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// trafficMetrics are the names of the traffic metrics' samples.
var trafficMetrics = []string{
	"conntrace_sent_bytes_total", "conntrace_received_bytes_total", "conntrace_retransmits_total",
	"conntrace_rtt_seconds_count", "conntrace_rtt_seconds_sum", "conntrace_connections",
	"conntrace_connections_opened_total", "conntrace_connections_closed_total", "conntrace_connection_failures_total",
}

func TestParseLabels(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{DefaultLabels, []string{"protocol", "family", "direction", "remote_addr", "port"}},
		{"", nil},
		{"  ", nil},
		{" port , protocol", []string{"protocol", "port"}}, // the metrics' order, not the flag's
		{"pod_uid,container_id,unit,cgroup,nat_remote_addr,local_addr,netns,pid,process,port,remote_addr,direction,family,protocol", labelNames[:]},
	} {
		l, err := ParseLabels(tc.in)
		if err != nil {
			t.Errorf("ParseLabels(%q): %v", tc.in, err)
			continue
		}
		if !slices.Equal(l.Names(), tc.want) {
			t.Errorf("ParseLabels(%q) = %v, want %v", tc.in, l.Names(), tc.want)
		}
	}
	for in, want := range map[string]string{
		"protocol,foo":        `unknown label "foo" (known: protocol, family, direction, remote_addr, port, process, pid, netns, local_addr, nat_remote_addr, cgroup, unit, container_id, pod_uid)`,
		"Protocol":            `unknown label "Protocol"`,
		"remote-addr":         `unknown label "remote-addr"`,
		"port,direction,port": `label "port" given twice`,
		"pid, pid":            `label "pid" given twice`,
		"protocol,,port":      "empty label name at position 2",
		"protocol,":           "empty label name at position 2",
	} {
		_, err := ParseLabels(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseLabels(%q) error %v, want one containing %q", in, err, want)
		}
	}
}

// parseCollectorFlags parses args with the collector flags only.
func parseCollectorFlags(t *testing.T, args ...string) (options, []string) {
	t.Helper()
	app := kingpin.New("test", "")
	f := AddCollectorFlags(app)
	if _, err := app.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	opts, msgs := f.Options()
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return o, msgs
}

func TestCollectorFlags(t *testing.T) {
	o, msgs := parseCollectorFlags(t)
	if msgs != nil || o.labels != MustParseLabels(DefaultLabels) || o.maxSeries != DefaultMaxSeries {
		t.Errorf("defaults: labels %v, max series %d, messages %v", o.labels, o.maxSeries, msgs)
	}
	o, msgs = parseCollectorFlags(t, "--collector.labels=port,process", "--collector.max-series=0")
	if msgs != nil || o.labels.String() != "port,process" || o.maxSeries != 0 {
		t.Errorf("labels %v, max series %d, messages %v", o.labels, o.maxSeries, msgs)
	}
	// No label at all is allowed: one series per metric.
	if o, msgs = parseCollectorFlags(t, "--collector.labels="); msgs != nil || len(o.labels.Names()) != 0 {
		t.Errorf("empty labels: %v, messages %v", o.labels, msgs)
	}

	// Bad values: each message names the flag, the value and the problem.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--collector.labels=protocol,bogus"}, []string{`--collector.labels=protocol,bogus: unknown label "bogus"`}},
		{[]string{"--collector.labels=port,direction,port"}, []string{`--collector.labels=port,direction,port: label "port" given twice`}},
		{[]string{"--collector.labels=port,,pid"}, []string{`--collector.labels=port,,pid: empty label name at position 2`}},
		{[]string{"--collector.max-series=-5"}, []string{"--collector.max-series=-5: must be at least 0 (0: no limit)"}},
		{[]string{"--collector.labels=pid,pid", "--collector.max-series=-1"}, []string{
			`--collector.labels=pid,pid: label "pid" given twice`, "--collector.max-series=-1: must be at least 0",
		}},
	} {
		_, msgs := parseCollectorFlags(t, tc.args...)
		if len(msgs) != len(tc.want) {
			t.Errorf("%v: messages %q, want %d", tc.args, msgs, len(tc.want))
			continue
		}
		for i, want := range tc.want {
			if !strings.HasPrefix(msgs[i], want) {
				t.Errorf("%v: message %q, want one starting with %q", tc.args, msgs[i], want)
			}
		}
	}
	// Not a number: the parse error names the flag.
	app := kingpin.New("test", "")
	AddCollectorFlags(app)
	_, err := app.Parse([]string{"--collector.max-series=ten"})
	if want := "--collector.max-series=ten: not an integer"; err == nil || err.Error() != want {
		t.Errorf("--collector.max-series=ten: error %v, want %q", err, want)
	}
}

// TestLabelSelection: the selected labels, and only they, split the
// series; the others aggregate.
func TestLabelSelection(t *testing.T) {
	src := newFakeSource()
	mk := func(cookie uint64, typ tracer.ConnectionType, dir tracer.ConnectionDirection, local, remote string, pid uint32, comm string) tracer.ConnectionStats {
		c := conn(cookie, typ, dir, local, remote)
		c.Pid, c.Comm, c.NetNS = pid, comm, 4026531840+pid%2
		return c
	}
	conns := []tracer.ConnectionStats{
		mk(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443", 100, "curl"),
		mk(2, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40001", "192.0.2.2:443", 101, "wget"),
		mk(3, tracer.TCP, tracer.INCOMING, "10.0.0.2:443", "198.51.100.1:50000", 7, "nginx"),
		mk(4, tracer.UDP, tracer.NONE, "10.0.0.1:40002", "192.0.2.53:53", 100, "curl"),
	}
	for _, c := range conns {
		src.set(c)
	}
	traffic := func() {
		for i, c := range conns {
			src.update(c.Key, func(c *tracer.ConnectionStats) {
				c.Monotonic.SentBytes += uint64(10 * (i + 1))
				if c.Type == tracer.TCP {
					c.Monotonic.Retransmits++
				}
			})
		}
	}

	t.Run("protocol,port", func(t *testing.T) {
		h := NewHandler(src, WithExporterMetrics(false), WithLabels(MustParseLabels("port,protocol")))
		mustScrape(t, h, "a")
		traffic()
		s := mustScrape(t, h, "a")
		for key, want := range map[string]float64{
			`conntrace_sent_bytes_total{port="443",protocol="tcp"}`:  10 + 20 + 30, // both peers and both directions
			`conntrace_sent_bytes_total{port="53",protocol="udp"}`:   40,
			`conntrace_connections{port="443",protocol="tcp"}`:       3,
			`conntrace_retransmits_total{port="443",protocol="tcp"}`: 3,
		} {
			if got := s.get(t, key); got != want {
				t.Errorf("%s = %v, want %v", key, got, want)
			}
		}
		if n := len(s.series("conntrace_sent_bytes_total")); n != 2 {
			t.Errorf("%d label sets, want 2", n)
		}
	})

	t.Run("process,pid,netns,local_addr", func(t *testing.T) {
		h := NewHandler(src, WithExporterMetrics(false), WithLabels(MustParseLabels("process,pid,netns,local_addr")))
		mustScrape(t, h, "b")
		traffic()
		s := mustScrape(t, h, "b")
		for key, want := range map[string]float64{
			`conntrace_sent_bytes_total{local_addr="10.0.0.1",netns="4026531840",pid="100",process="curl"}`:  10 + 40,
			`conntrace_sent_bytes_total{local_addr="10.0.0.1",netns="4026531841",pid="101",process="wget"}`:  20,
			`conntrace_sent_bytes_total{local_addr="10.0.0.2",netns="4026531841",pid="7",process="nginx"}`:   30,
			`conntrace_retransmits_total{local_addr="10.0.0.1",netns="4026531840",pid="100",process="curl"}`: 1,
		} {
			if got := s.get(t, key); got != want {
				t.Errorf("%s = %v, want %v", key, got, want)
			}
		}
	})

	t.Run("none", func(t *testing.T) {
		h := NewHandler(src, WithExporterMetrics(false), WithLabels(Labels{}))
		mustScrape(t, h, "c")
		traffic()
		s := mustScrape(t, h, "c")
		for key, want := range map[string]float64{
			"conntrace_sent_bytes_total":  100,
			"conntrace_connections":       4,
			"conntrace_retransmits_total": 3, // TCP traffic counted here: TCP-only metrics exported
			"conntrace_series":            1,
		} {
			if got := s.get(t, key); got != want {
				t.Errorf("%s = %v, want %v", key, got, want)
			}
		}
	})
}

// TestAddressGroups: an address in a group becomes the group's CIDR, the
// most specific group, in remote_addr and local_addr.
func TestAddressGroups(t *testing.T) {
	p := netip.MustParsePrefix
	groups := groupsOf(p("10.0.0.0/8"), p("10.1.0.0/16"), p("2001:db8::/32"), p("192.0.2.9/32"))
	unmasked := func(a netip.Addr) (netip.Prefix, bool) {
		if g, ok := groups(a); ok {
			return netip.PrefixFrom(a, g.Bits()), true // not masked: the collector masks it
		}
		return netip.Prefix{}, false
	}
	for name, grouper := range map[string]AddressGrouper{"masked": groups, "unmasked": unmasked} {
		t.Run(name, func(t *testing.T) {
			km := keyMaker{labels: MustParseLabels("remote_addr,local_addr,family"), group: grouper}
			for _, tc := range []struct {
				local, remote string
				want          []string // family, remote_addr, local_addr
			}{
				{"10.0.0.1:40000", "10.1.2.3:443", []string{"ipv4", "10.1.0.0/16", "10.0.0.0/8"}},
				{"10.0.0.1:40000", "10.2.0.1:443", []string{"ipv4", "10.0.0.0/8", "10.0.0.0/8"}},
				{"[::ffff:10.0.0.1]:40000", "[::ffff:10.2.0.2]:443", []string{"ipv4", "10.0.0.0/8", "10.0.0.0/8"}},
				{"172.16.0.1:40000", "192.0.2.1:443", []string{"ipv4", "192.0.2.1", "172.16.0.1"}},
				{"172.16.0.1:40000", "192.0.2.9:443", []string{"ipv4", "192.0.2.9/32", "172.16.0.1"}},
				{"[2001:db9::1]:40000", "[2001:db8::5]:443", []string{"ipv6", "2001:db8::/32", "2001:db9::1"}},
			} {
				c := conn(1, tracer.TCP, tracer.OUTGOING, tc.local, tc.remote)
				if got := km.key(&c).values(km.labels); !slices.Equal(got, tc.want) {
					t.Errorf("%s -> %s: %v, want %v", tc.local, tc.remote, got, tc.want)
				}
			}
			// A group /32 and its address alone are different label sets.
			a := conn(1, tracer.TCP, tracer.OUTGOING, "172.16.0.1:1", "192.0.2.9:443")
			b := a
			km.group = nil
			if km.key(&a) != km.key(&b) {
				t.Fatal("same connection, different keys")
			}
			km.group = grouper
			ka := km.key(&a)
			km.group = nil
			if ka == km.key(&b) {
				t.Error("the group 192.0.2.9/32 and the address 192.0.2.9 have the same key")
			}
		})
	}

	// Through the handler: the peers of a group aggregate.
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false), WithAddressGroups(groups))
	mustScrape(t, h, "a")
	for i := range 20 {
		c := conn(uint64(i+1), tracer.TCP, tracer.OUTGOING, "172.16.0.1:40000", fmt.Sprintf("10.1.0.%d:443", i+1))
		c.Monotonic.SentBytes = 5
		src.set(c)
	}
	s := mustScrape(t, h, "a")
	l := ls{"tcp", "ipv4", "outgoing", "10.1.0.0/16", "443"}
	if got := s.get(t, l.of("conntrace_sent_bytes_total")); got != 100 {
		t.Errorf("sent = %v, want 100", got)
	}
	if got := s.get(t, "conntrace_series"); got != 1 {
		t.Errorf("series = %v, want 1", got)
	}
}

// TestUDPHasNoTCPMetrics: retransmits, RTT and failures are exported for
// TCP label sets only; a label set without the protocol label has them
// once TCP traffic reached it.
func TestUDPHasNoTCPMetrics(t *testing.T) {
	src := newFakeSource()
	udpIn := conn(1, tracer.UDP, tracer.INCOMING, "10.0.0.1:53", "192.0.2.1:40000")
	udpNone := conn(2, tracer.UDP, tracer.NONE, "10.0.0.1:40001", "192.0.2.2:123")
	tcp := conn(3, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40002", "192.0.2.2:123")
	for _, c := range []tracer.ConnectionStats{udpIn, udpNone, tcp} {
		src.set(c)
	}
	h := NewHandler(src, WithExporterMetrics(false))
	hPort := NewHandler(src, WithExporterMetrics(false), WithLabels(MustParseLabels("port")))
	mustScrape(t, h, "a")
	mustScrape(t, hPort, "b")
	for _, k := range []tracer.ConnKey{udpIn.Key, udpNone.Key, tcp.Key} {
		src.update(k, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 10; c.Monotonic.RecvBytes += 20 })
	}

	s := mustScrape(t, h, "a")
	tcpOnly := []string{"conntrace_retransmits_total", "conntrace_rtt_seconds_count", "conntrace_sent_segments_total"}
	for _, l := range []ls{
		{"udp", "ipv4", "incoming", "192.0.2.1", "53"},
		{"udp", "ipv4", "none", "192.0.2.2", "123"},
	} {
		for _, name := range []string{"conntrace_sent_bytes_total", "conntrace_received_bytes_total", "conntrace_connections",
			"conntrace_connections_opened_total", "conntrace_connections_closed_total"} {
			s.get(t, l.of(name))
		}
		for _, name := range tcpOnly {
			if _, ok := s[l.of(name)]; ok {
				t.Errorf("UDP label set %v has %s", l, name)
			}
		}
	}
	for _, name := range tcpOnly {
		s.get(t, ls{"tcp", "ipv4", "outgoing", "192.0.2.2", "123"}.of(name))
	}

	// port only: 123 has TCP and UDP (TCP-only metrics), 53 UDP only.
	s = mustScrape(t, hPort, "b")
	for _, name := range tcpOnly {
		s.get(t, name+`{port="123"}`)
		if _, ok := s[name+`{port="53"}`]; ok {
			t.Errorf("UDP-only label set port=53 has %s", name)
		}
	}
	if got := s.get(t, `conntrace_sent_bytes_total{port="123"}`); got != 20 {
		t.Errorf(`sent{port="123"} = %v, want 20`, got)
	}
}

// TestMaxSeriesOverflow: past the cap, new label sets go to the overflow
// series; a label set keeps its series; the overflow counter counts each
// connection once.
func TestMaxSeriesOverflow(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false), WithMaxSeries(2))
	mustScrape(t, h, "a")
	peer := func(cookie uint64, i int) tracer.ConnectionStats {
		return conn(cookie, tracer.TCP, tracer.OUTGOING, fmt.Sprintf("10.0.0.1:%d", 40000+cookie), fmt.Sprintf("192.0.2.%d:443", i))
	}
	for i := 1; i <= 5; i++ {
		c := peer(uint64(i), i)
		c.Monotonic.SentBytes = uint64(i)
		c.Monotonic.Retransmits = 1
		src.set(c)
	}
	over := ls{"overflow", "overflow", "overflow", "overflow", "overflow"}
	s := mustScrape(t, h, "a")
	for key, want := range map[string]float64{
		ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}.of("conntrace_sent_bytes_total"): 1,
		ls{"tcp", "ipv4", "outgoing", "192.0.2.2", "443"}.of("conntrace_sent_bytes_total"): 2,
		over.of("conntrace_sent_bytes_total"):                                              3 + 4 + 5,
		over.of("conntrace_retransmits_total"):                                             3,
		over.of("conntrace_connections"):                                                   3,
		over.of("conntrace_connections_opened_total"):                                      3,
		"conntrace_series":                2,
		"conntrace_series_limit":          2,
		"conntrace_series_overflow_total": 3,
	} {
		if got := s.get(t, key); got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	if n := len(s.series("conntrace_sent_bytes_total")); n != 3 {
		t.Errorf("%d label sets, want 3 (2 + overflow)", n)
	}

	// More traffic on the same connections: not counted again.
	for i := 1; i <= 5; i++ {
		src.update(tracer.ConnKey{Cookie: uint64(i)}, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 100 })
	}
	// Peer 1's connection closes: its label set keeps its series, and a
	// new connection to it counts there, not in the overflow series.
	src.close(tracer.ConnKey{Cookie: 1})
	src.set(peer(10, 1))
	// A new peer goes to the overflow series: the cap is reached for
	// good (series are never dropped).
	src.set(peer(11, 6))
	s = mustScrape(t, h, "a")
	for key, want := range map[string]float64{
		ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}.of("conntrace_sent_bytes_total"):         101,
		ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}.of("conntrace_connections_closed_total"): 1,
		ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}.of("conntrace_connections"):              1,
		over.of("conntrace_sent_bytes_total"):                                                      12 + 300,
		over.of("conntrace_connections"):                                                           4,
		"conntrace_series_overflow_total":                                                          4,
	} {
		if got := s.get(t, key); got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}

	// An overflowed connection that closes is counted once; one that
	// leaves the view without a close record is forgotten.
	src.close(tracer.ConnKey{Cookie: 3})
	src.drop(tracer.ConnKey{Cookie: 4})
	s = mustScrape(t, h, "a")
	if got := s.get(t, "conntrace_series_overflow_total"); got != 4 {
		t.Errorf("overflow total = %v, want 4", got)
	}
	if got := s.get(t, over.of("conntrace_connections_closed_total")); got != 1 {
		t.Errorf("overflow closed = %v, want 1", got)
	}

	// A new client of the source restarts the series, and the counter.
	h.e.state.RemoveClient(cid("a"))
	s = mustScrape(t, h, "a")
	// Open now, in cookie order: 2 (peer 2), 5 (peer 5), 10 (peer 1), 11
	// (peer 6): peers 2 and 5 get the series, 1 and 6 overflow.
	if got := s.get(t, "conntrace_series_overflow_total"); got != 2 {
		t.Errorf("after NewClient: overflow total = %v, want 2", got)
	}
	if got := s.get(t, ls{"tcp", "ipv4", "outgoing", "192.0.2.5", "443"}.of("conntrace_sent_bytes_total")); got != 0 {
		t.Errorf("after NewClient: sent to peer 5 = %v, want 0", got)
	}
}

// TestMaxSeriesUnlimited: 0 means no cap.
func TestMaxSeriesUnlimited(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false), WithMaxSeries(0))
	mustScrape(t, h, "a")
	for i := range 300 {
		src.set(conn(uint64(i+1), tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", fmt.Sprintf("10.9.%d.%d:443", i/256, i%256)))
	}
	s := mustScrape(t, h, "a")
	if n := len(s.series("conntrace_sent_bytes_total")); n != 300 {
		t.Errorf("%d label sets, want 300", n)
	}
	if _, ok := s["conntrace_series_limit"]; ok {
		t.Error("conntrace_series_limit exported without a limit")
	}
	if got := s.get(t, "conntrace_series_overflow_total"); got != 0 {
		t.Errorf("overflow total = %v, want 0", got)
	}
}

// TestProcessNamedOverflow: with process as the only label, a process
// named "overflow" would collide with the overflow series: it is counted
// there, and the scrape does not fail on a duplicate series.
func TestProcessNamedOverflow(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false), WithLabels(MustParseLabels("process")), WithMaxSeries(1))
	mustScrape(t, h, "a")
	for i, comm := range []string{"curl", "overflow", "wget"} {
		c := conn(uint64(i+1), tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
		c.Comm, c.Monotonic.SentBytes = comm, 10
		src.set(c)
	}
	s := mustScrape(t, h, "a")
	if got := s.get(t, `conntrace_sent_bytes_total{process="curl"}`); got != 10 {
		t.Errorf("curl: %v, want 10", got)
	}
	if got := s.get(t, `conntrace_sent_bytes_total{process="overflow"}`); got != 20 {
		t.Errorf("overflow: %v, want 20", got)
	}
}

// truth is what a client must see: the sum of the deltas since its first
// scrape, kept by the test from the changes it makes.
type truth struct {
	sent, recv, retrans, segs, opened, closed, failed uint64
	rtt                                               [tracer.NumRTTBuckets]uint64
	rttSum                                            uint64
}

func (tr *truth) add(o *truth, sign int) {
	f := func(a *uint64, b uint64) {
		if sign > 0 {
			*a += b
		} else {
			*a -= b
		}
	}
	f(&tr.sent, o.sent)
	f(&tr.recv, o.recv)
	f(&tr.retrans, o.retrans)
	f(&tr.segs, o.segs)
	f(&tr.opened, o.opened)
	f(&tr.closed, o.closed)
	f(&tr.failed, o.failed)
	f(&tr.rttSum, o.rttSum)
	for i := range tr.rtt {
		f(&tr.rtt[i], o.rtt[i])
	}
}

// checkConservation checks that the sum over every series of each traffic
// metric is the truth, and that open connections are the gauge's sum.
func checkConservation(t *testing.T, what string, idx map[string][]sample, want *truth, open int) {
	t.Helper()
	var count uint64
	for _, n := range want.rtt {
		count += n
	}
	for name, w := range map[string]uint64{
		"conntrace_sent_bytes_total":          want.sent,
		"conntrace_received_bytes_total":      want.recv,
		"conntrace_retransmits_total":         want.retrans,
		"conntrace_sent_segments_total":       want.segs,
		"conntrace_connections_opened_total":  want.opened,
		"conntrace_connections_closed_total":  want.closed,
		"conntrace_connection_failures_total": want.failed,
		"conntrace_rtt_seconds_count":         count,
		"conntrace_connections":               uint64(open),
	} {
		if got := sumOf(idx, name, ""); got != float64(w) {
			t.Errorf("%s: sum of %s = %v, want %d", what, name, got, w)
		}
	}
	if got, w := sumOf(idx, "conntrace_rtt_seconds_sum", ""), float64(want.rttSum)/1e6; math.Abs(got-w) > 1e-9*math.Max(1, w) {
		t.Errorf("%s: sum of conntrace_rtt_seconds_sum = %v, want %v", what, got, w)
	}
	// Every bucket: le = 2^e µs holds the kernel buckets 0..e.
	for e := rttFirstExp; e <= rttLastExp; e++ {
		le := strconv.FormatFloat(float64(uint64(1)<<e)/1e6, 'g', -1, 64)
		var w uint64
		for i := 0; i <= e; i++ {
			w += want.rtt[i]
		}
		if got := sumOf(idx, "conntrace_rtt_seconds_bucket", le); got != float64(w) {
			t.Errorf("%s: sum of conntrace_rtt_seconds_bucket{le=%q} = %v, want %d", what, le, got, w)
		}
	}
	if got := sumOf(idx, "conntrace_rtt_seconds_bucket", "+Inf"); got != float64(count) {
		t.Errorf("%s: sum of conntrace_rtt_seconds_bucket{le=\"+Inf\"} = %v, want %d", what, got, count)
	}
}

// checkMonotonic checks that no series of a counter went down or vanished
// between two scrapes of one client: a label set keeps its series.
func checkMonotonic(t *testing.T, what string, prev, cur samples) {
	t.Helper()
	for key, v := range prev {
		name, _, _ := strings.Cut(key, "{")
		if name == "conntrace_connections" || !strings.HasPrefix(name, "conntrace_") ||
			!(strings.HasSuffix(name, "_total") || strings.HasPrefix(name, "conntrace_rtt_seconds")) {
			continue
		}
		got, ok := cur[key]
		if !ok {
			t.Errorf("%s: %s vanished", what, key)
		} else if got < v {
			t.Errorf("%s: %s went from %v to %v", what, key, v, got)
		}
	}
}

// TestConservationRandomized runs random workloads (many peers, TCP and
// UDP, random labels, address groups and a small cap) with two clients
// that scrape at different times, and checks after every scrape that the
// sum over all series of every traffic metric (the histogram's count, sum
// and buckets, and the gauge included) is exactly what happened since the
// client's first scrape, that the series stay within the cap, and that no
// counter moves between series.
func TestConservationRandomized(t *testing.T) {
	overflowed := 0
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 42))
		var names []string
		for _, n := range labelNames {
			if rng.IntN(2) == 0 {
				names = append(names, n)
			}
		}
		labels := MustParseLabels(strings.Join(names, ","))
		allGroups := []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16"),
			netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.0.2.0/26"),
		}
		var groups []netip.Prefix
		for _, g := range allGroups {
			if rng.IntN(2) == 0 {
				groups = append(groups, g)
			}
		}
		maxSeries := rng.IntN(12) // 0: no cap
		name := fmt.Sprintf("seed=%d/labels=%s/groups=%v/max=%d", seed, labels, groups, maxSeries)
		t.Run(name, func(t *testing.T) {
			if runConservation(t, rng, labels, groupsOf(groups...), maxSeries) {
				overflowed++
			}
		})
	}
	t.Logf("%d of the workloads reached the cap", overflowed)
	// The workloads do exercise the cap.
	if overflowed < 15 {
		t.Errorf("only %d workloads reached the cap", overflowed)
	}
}

// runConservation runs one workload; it returns whether the cap was reached
// (the overflow series appeared).
func runConservation(t *testing.T, rng *rand.Rand, labels Labels, groups AddressGrouper, maxSeries int) (overflowed bool) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false), WithLabels(labels), WithAddressGroups(groups), WithMaxSeries(maxSeries))

	// The total of every change so far, and its value at each client's
	// first scrape.
	var total truth
	start := map[string]*truth{}
	prev := map[string]samples{}
	active := map[uint64]bool{}
	var next uint64

	peer := func() string {
		switch rng.IntN(5) {
		case 0:
			return fmt.Sprintf("10.1.%d.%d", rng.IntN(4), rng.IntN(250)+1)
		case 1:
			return fmt.Sprintf("10.%d.0.%d", rng.IntN(8)+2, rng.IntN(250)+1)
		case 2:
			return fmt.Sprintf("[2001:db8::%x]", rng.IntN(500)+1)
		case 3:
			return fmt.Sprintf("[::ffff:192.0.2.%d]", rng.IntN(250)+1) // v4-mapped
		}
		return fmt.Sprintf("198.51.100.%d", rng.IntN(250)+1)
	}
	open := func() {
		next++
		remote := peer()
		local := "10.0.0.1"
		if strings.HasPrefix(remote, "[2001") {
			local = "[2001:db8:ffff::1]"
		} else if rng.IntN(3) == 0 {
			local = "172.16.0.1"
		}
		typ, dir := tracer.TCP, []tracer.ConnectionDirection{tracer.INCOMING, tracer.OUTGOING, tracer.LOCAL}[rng.IntN(3)]
		if rng.IntN(3) == 0 {
			typ, dir = tracer.UDP, []tracer.ConnectionDirection{tracer.INCOMING, tracer.NONE}[rng.IntN(2)]
		}
		c := conn(next, typ, dir, fmt.Sprintf("%s:%d", local, 1000+rng.IntN(3)), fmt.Sprintf("%s:%d", remote, 50+rng.IntN(3)))
		c.Pid = uint32(100 + rng.IntN(4))
		c.Comm = []string{"curl", "nginx", "named", "sshd"}[rng.IntN(4)]
		c.NetNS = uint32(4026531840 + rng.IntN(2))
		c.Established = typ == tracer.UDP || rng.IntN(4) != 0
		c.Preexisting = c.Established && next < 20 && rng.IntN(2) == 0
		if c.Established && !c.Preexisting {
			total.opened++
		}
		src.set(c)
		active[next] = true
	}
	traffic := func(k uint64) {
		src.update(tracer.ConnKey{Cookie: k}, func(c *tracer.ConnectionStats) {
			if !c.Established && rng.IntN(3) == 0 {
				c.Established = true
				total.opened++
			}
			if !c.Established {
				if c.Type == tracer.TCP {
					c.Monotonic.Retransmits++ // SYN retransmissions
					total.retrans++
				}
				return
			}
			s, r := uint64(rng.IntN(5000)), uint64(rng.IntN(5000))
			c.Monotonic.SentBytes += s
			c.Monotonic.RecvBytes += r
			total.sent += s
			total.recv += r
			if c.Type != tracer.TCP {
				return
			}
			re := uint32(rng.IntN(3))
			c.Monotonic.Retransmits += re
			total.retrans += uint64(re)
			sg := re + uint32(rng.IntN(10))
			c.Monotonic.SentSegments += sg
			total.segs += uint64(sg)
			for range rng.IntN(4) {
				b := rng.IntN(tracer.NumRTTBuckets)
				v := uint64(1) << b / 2
				c.Monotonic.RTT.Buckets[b]++
				c.Monotonic.RTT.SumMicros += v
				total.rtt[b]++
				total.rttSum += v
			}
		})
	}
	closeOne := func(k uint64) {
		src.mu.Lock()
		established := src.active[tracer.ConnKey{Cookie: k}].Established
		src.mu.Unlock()
		if established {
			total.closed++
		} else {
			total.failed++
		}
		src.close(tracer.ConnKey{Cookie: k})
		delete(active, k)
	}
	scrapeCheck := func(id string) {
		s := mustScrape(t, h, id)
		if start[id] == nil {
			st := total
			start[id] = &st
		}
		want := total
		want.add(start[id], -1)
		openNow := 0
		src.mu.Lock()
		for _, c := range src.active {
			if c.Established {
				openNow++
			}
		}
		src.mu.Unlock()
		what := fmt.Sprintf("client %s", id)
		idx := s.byName()
		checkConservation(t, what, idx, &want, openNow)
		if p := prev[id]; p != nil {
			checkMonotonic(t, what, p, s)
		}
		prev[id] = s
		for _, name := range trafficMetrics {
			if n := len(seriesOf(idx, name)); maxSeries > 0 && n > maxSeries+1 {
				t.Errorf("%s: %s has %d label sets, cap %d (+1 overflow)", what, name, n, maxSeries)
			}
		}
		if got := s.get(t, "conntrace_series"); maxSeries > 0 && got > float64(maxSeries) {
			t.Errorf("%s: conntrace_series = %v > cap %d", what, got, maxSeries)
		}
	}

	for range 10 {
		open()
	}
	scrapeCheck("a")
	for round := range 25 {
		for range rng.IntN(15) {
			open()
		}
		for _, k := range slices.Sorted(func(yield func(uint64) bool) {
			for k := range active {
				if !yield(k) {
					return
				}
			}
		}) {
			switch rng.IntN(6) {
			case 0:
				closeOne(k)
			case 1, 2, 3:
				traffic(k)
			}
		}
		if rng.IntN(2) == 0 {
			scrapeCheck("a")
		}
		if round >= 5 && rng.IntN(3) == 0 {
			scrapeCheck("b")
		}
		if t.Failed() {
			return false
		}
	}
	scrapeCheck("a")
	scrapeCheck("b")
	for _, s := range prev {
		if s.get(t, "conntrace_series_overflow_total") > 0 {
			overflowed = true
		}
	}
	return overflowed
}

// TestCardinalityIssueScenario is the scenario of issue 3: 500 peers, a
// cap of 50 series and two CIDR groups. The series stay within the cap
// (plus the overflow series), every metric's sum is the truth, each group
// is exact, and the overflow counter counts the connections that went to
// the overflow series.
func TestCardinalityIssueScenario(t *testing.T) {
	const peers, maxSeries = 500, 50
	groupA, groupB := netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24")
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false), WithMaxSeries(maxSeries), WithAddressGroups(groupsOf(groupA, groupB)))

	// Peer i: group A if i%5 == 0, group B if i%5 == 1, else an address
	// of its own. One TCP connection per peer (cookie 2i+1), and a UDP
	// flow to port 53 for every tenth peer (cookie 2i+2).
	addr := func(i int) netip.Addr {
		switch i % 5 {
		case 0:
			return netip.AddrFrom4([4]byte{192, 0, 2, byte(i / 5)})
		case 1:
			return netip.AddrFrom4([4]byte{198, 51, 100, byte(i / 5)})
		}
		return netip.AddrFrom4([4]byte{203, byte(i >> 8), 113, byte(i)})
	}
	// The model: the label set of each connection, and which label sets
	// get a series (the first maxSeries, in cookie order).
	labelSet := func(i int, udp bool) string {
		a := addr(i).String()
		switch {
		case groupA.Contains(addr(i)):
			a = groupA.String()
		case groupB.Contains(addr(i)):
			a = groupB.String()
		}
		if udp {
			return "udp|none|53|" + a
		}
		return "tcp|outgoing|443|" + a
	}
	var total truth
	type member struct {
		key tracer.ConnKey
		set string
	}
	var conns []member
	for i := range peers {
		c := conn(uint64(2*i+1), tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", netip.AddrPortFrom(addr(i), 443).String())
		src.set(c)
		total.opened++
		conns = append(conns, member{c.Key, labelSet(i, false)})
		if i%10 == 0 {
			u := conn(uint64(2*i+2), tracer.UDP, tracer.NONE, "10.0.0.1:40001", netip.AddrPortFrom(addr(i), 53).String())
			src.set(u)
			total.opened++
			conns = append(conns, member{u.Key, labelSet(i, true)})
		}
	}
	hasSeries := map[string]bool{}
	overflowConns := 0
	for _, m := range conns { // in cookie order, as the fake lists them
		if !hasSeries[m.set] && len(hasSeries) < maxSeries {
			hasSeries[m.set] = true
		}
		if !hasSeries[m.set] {
			overflowConns++
		}
	}

	s := mustScrape(t, h, "prom")
	checkConservation(t, "first scrape", s.byName(), &truth{}, len(conns))
	start := total

	// Traffic on every connection; per group, the truth.
	groupSent := map[netip.Prefix]uint64{}
	rng := rand.New(rand.NewPCG(3, 3))
	for round := range 3 {
		for j, m := range conns {
			if round >= 2 && j < 40 {
				continue // closed in round 1
			}
			sent, recv := uint64(rng.IntN(100_000)), uint64(rng.IntN(100_000))
			src.update(m.key, func(c *tracer.ConnectionStats) {
				c.Monotonic.SentBytes += sent
				c.Monotonic.RecvBytes += recv
				if c.Type == tracer.TCP {
					c.Monotonic.Retransmits += 1
					c.Monotonic.RTT.Buckets[10+round]++
					c.Monotonic.RTT.SumMicros += 1000 << round
					total.retrans++
					total.rtt[10+round]++
					total.rttSum += 1000 << round
				}
				for _, g := range []netip.Prefix{groupA, groupB} {
					if g.Contains(c.Dest) && c.Type == tracer.TCP {
						groupSent[g] += sent
					}
				}
			})
			total.sent += sent
			total.recv += recv
		}
		// Some connections close.
		if round == 1 {
			for _, m := range conns[:40] {
				src.close(m.key)
				total.closed++
			}
		}
		s = mustScrape(t, h, "prom")
		want := total
		want.add(&start, -1)
		open := len(conns)
		if round >= 1 {
			open -= 40
		}
		idx := s.byName()
		checkConservation(t, fmt.Sprintf("round %d", round), idx, &want, open)
		for _, name := range trafficMetrics {
			if n := len(seriesOf(idx, name)); n > maxSeries+1 {
				t.Errorf("round %d: %s has %d label sets, want at most %d + 1", round, name, n, maxSeries)
			}
		}
		if got := s.get(t, "conntrace_series"); got != maxSeries {
			t.Errorf("round %d: conntrace_series = %v, want %d", round, got, maxSeries)
		}
		for _, g := range []netip.Prefix{groupA, groupB} {
			sel := map[string]string{"remote_addr": g.String(), "protocol": "tcp"}
			if got := s.find(t, "conntrace_sent_bytes_total", sel); got != float64(groupSent[g]) {
				t.Errorf("round %d: sent to group %s = %v, want %d", round, g, got, groupSent[g])
			}
		}
		if got := s.get(t, "conntrace_series_overflow_total"); got != float64(overflowConns) {
			t.Errorf("round %d: conntrace_series_overflow_total = %v, want %d", round, got, overflowConns)
		}
		over := ls{"overflow", "overflow", "overflow", "overflow", "overflow"}
		s.get(t, over.of("conntrace_sent_bytes_total"))
	}
}
