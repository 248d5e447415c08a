package collector

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/conntrace/conntrace_exporter/netstate"
	"github.com/conntrace/conntrace_exporter/tracer"
)

// The client is the scraper's address, with its client_id if given: the
// same client_id from another address is another client, so guessing a
// client_id does not take that client's deltas (issue 11.15).
func TestClientID(t *testing.T) {
	for _, tc := range []struct {
		target, remote, want string
	}{
		{"/metrics?client_id=prom-a", "192.0.2.1:40000", "prom-a@192.0.2.1"},
		{"/metrics?client_id=prom-a", "192.0.2.9:40000", "prom-a@192.0.2.9"}, // another scraper: another client
		{"/metrics", "192.0.2.1:40000", "192.0.2.1"},
		{"/metrics", "192.0.2.1:40001", "192.0.2.1"}, // the port does not matter
		{"/metrics", "[2001:db8::1]:40000", "2001:db8::1"},
		{"/metrics?client_id=", "192.0.2.1:40000", "192.0.2.1"},
		{"/metrics", "no-port", "no-port"},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.target, nil)
		r.RemoteAddr = tc.remote
		if got := ClientID(r); got != tc.want {
			t.Errorf("ClientID(%s from %s) = %q, want %q", tc.target, tc.remote, got, tc.want)
		}
	}
}

// TestPortAndDirection checks that the port label is the service port: the
// local port of an incoming connection, the remote port of any other.
func TestPortAndDirection(t *testing.T) {
	for _, tc := range []struct {
		dir       tracer.ConnectionDirection
		wantDir   string
		wantPort  string
		wantProto string
		typ       tracer.ConnectionType
	}{
		{tracer.INCOMING, "incoming", "8080", "tcp", tracer.TCP},
		{tracer.OUTGOING, "outgoing", "443", "tcp", tracer.TCP},
		{tracer.LOCAL, "local", "443", "tcp", tracer.TCP},
		{tracer.NONE, "none", "443", "udp", tracer.UDP},
	} {
		// Local port 8080, remote 443 for every direction: only the
		// direction decides which one is the service.
		c := conn(1, tc.typ, tc.dir, "10.0.0.1:8080", "192.0.2.1:443")
		got := keyOf(&c).values(defaultKeys.labels)
		want := []string{tc.wantProto, "ipv4", tc.wantDir, "192.0.2.1", tc.wantPort}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: labels %v, want %v", tc.dir, got, want)
		}
	}

	// The ephemeral ports of the clients of one local service do not
	// make label sets: all of them aggregate into one.
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false))
	mustScrape(t, h, "c")
	for i := range 50 {
		c := conn(uint64(100+i), tracer.TCP, tracer.INCOMING, "10.0.0.1:22", fmt.Sprintf("192.0.2.7:%d", 40000+i))
		c.Monotonic.RecvBytes = 10
		src.set(c)
	}
	s := mustScrape(t, h, "c")
	l := ls{"tcp", "ipv4", "incoming", "192.0.2.7", "22"}
	if got := s.get(t, l.of("conntrace_received_bytes_total")); got != 500 {
		t.Errorf("received bytes = %v, want 500", got)
	}
	if got := s.get(t, l.of("conntrace_connections")); got != 50 {
		t.Errorf("connections = %v, want 50", got)
	}
	if n := strings.Count(strings.Join(keysOf(s), "\n"), "conntrace_sent_bytes_total{"); n != 1 {
		t.Errorf("%d label sets, want 1", n)
	}
}

func keysOf(s samples) []string {
	var k []string
	for key := range s {
		k = append(k, key)
	}
	return k
}

func TestV4MappedUnmapped(t *testing.T) {
	c := conn(1, tracer.TCP, tracer.OUTGOING, "[::ffff:10.0.0.1]:40000", "[::ffff:198.51.100.7]:5432")
	if !c.Dest.Is4In6() {
		t.Fatal("test connection is not v4-mapped")
	}
	got := keyOf(&c).values(defaultKeys.labels)
	if got[1] != "ipv4" || got[3] != "198.51.100.7" {
		t.Errorf("labels %v, want family ipv4 and remote_addr 198.51.100.7", got)
	}
	// Mapped and unmapped forms of one peer are one label set.
	d := conn(2, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40001", "198.51.100.7:5432")
	if keyOf(&c) != keyOf(&d) {
		t.Errorf("mapped %v and unmapped %v differ", keyOf(&c), keyOf(&d))
	}
	// A real IPv6 address stays as it is.
	e := conn(3, tracer.TCP, tracer.OUTGOING, "[2001:db8::1]:40000", "[2001:db8::2]:443")
	if got := keyOf(&e).values(defaultKeys.labels); got[1] != "ipv6" || got[3] != "2001:db8::2" {
		t.Errorf("labels %v, want family ipv6 and remote_addr 2001:db8::2", got)
	}
}

// TestRTTHistogramBuckets checks that the exported buckets are the exact
// cumulative counts of the kernel's buckets.
func TestRTTHistogramBuckets(t *testing.T) {
	if len(rttBounds) != 22 || rttBounds[0] != 8e-6 || rttBounds[len(rttBounds)-1] != 16.777216 {
		t.Fatalf("bounds %v: want 22 bounds from 8e-06 to 16.777216", rttBounds)
	}
	var h netstate.Counters
	// One sample in every kernel bucket i, of value 2^i µs (its upper bound).
	var in tracer.RTTHistogram
	for i := range tracer.NumRTTBuckets {
		in.Buckets[i] = uint32(i + 1) // i+1 samples in bucket i
		in.SumMicros += uint64(i+1) * tracer.RTTBucketUpperBoundMicros(i)
	}
	for range 2 { // twice: accumulation
		for i, v := range in.Buckets {
			h.RTT.Buckets[i] += uint64(v)
		}
		h.RTT.SumMicros += in.SumMicros
	}

	count, sum, buckets := rttHistogram(&h)
	var total uint64
	for i := range tracer.NumRTTBuckets {
		total += 2 * uint64(i+1)
	}
	if count != total {
		t.Errorf("count = %d, want %d", count, total)
	}
	if want := float64(2*in.SumMicros) / 1e6; sum != want {
		t.Errorf("sum = %v, want %v", sum, want)
	}
	if len(buckets) != 22 {
		t.Errorf("%d buckets, want 22", len(buckets))
	}
	// le = 2^i µs holds kernel buckets 0..i.
	for i := 3; i <= 24; i++ {
		le := float64(uint64(1)<<i) / 1e6
		var want uint64
		for j := 0; j <= i; j++ {
			want += 2 * uint64(j+1)
		}
		if got, ok := buckets[le]; !ok || got != want {
			t.Errorf("bucket le=%v: %d (present %v), want %d", le, got, ok, want)
		}
	}
	// Samples <= 8µs are all in the first bucket; those above 2^24µs only
	// in the count (+Inf).
	if got, want := buckets[8e-6], uint64(2*(1+2+3+4)); got != want {
		t.Errorf("le=8e-06: %d, want %d", got, want)
	}
	var above uint64
	for i := 25; i < tracer.NumRTTBuckets; i++ {
		above += 2 * uint64(i+1)
	}
	if got := count - buckets[16.777216]; got != above {
		t.Errorf("+Inf - le=16.777216 = %d, want %d", got, above)
	}
}

// TestRTTHistogramExposition checks the bucket mapping end to end.
func TestRTTHistogramExposition(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false))
	c := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
	src.set(c)
	mustScrape(t, h, "rtt")
	src.update(c.Key, func(c *tracer.ConnectionStats) {
		c.Monotonic.RTT.Buckets[0] = 1  // 1µs
		c.Monotonic.RTT.Buckets[2] = 1  // 3µs
		c.Monotonic.RTT.Buckets[4] = 1  // 9..16µs
		c.Monotonic.RTT.Buckets[24] = 1 // (8.4s, 16.8s]
		c.Monotonic.RTT.Buckets[26] = 2 // > 33.5s
		c.Monotonic.RTT.SumMicros = 1 + 3 + 10 + 10_000_000 + 2*40_000_000
	})
	s := mustScrape(t, h, "rtt")
	l := ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}
	for le, want := range map[string]float64{
		"8e-06": 2, "1.6e-05": 3, "3.2e-05": 3, "8.388608": 3, "16.777216": 4, "+Inf": 6,
	} {
		if got := s.get(t, l.bucket("conntrace_rtt_seconds_bucket", le)); got != want {
			t.Errorf("le=%s: %v, want %v", le, got, want)
		}
	}
	if got := s.get(t, l.of("conntrace_rtt_seconds_count")); got != 6 {
		t.Errorf("count = %v, want 6", got)
	}
	if got := s.get(t, l.of("conntrace_rtt_seconds_sum")); got != 90.000014 {
		t.Errorf("sum = %v, want 90.000014", got)
	}
}

// TestTwoClientsInterleaved has two scrapers scrape at different times
// while connections carry traffic, open and close: each sees every byte
// and every connection exactly once.
func TestTwoClientsInterleaved(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false))
	l := ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}

	// Both scrape first with nothing going on.
	mustScrape(t, h, "a")
	mustScrape(t, h, "b")

	var sent, opened, closed uint64
	active := map[uint64]bool{}
	var next uint64 = 1
	for round := range 30 {
		// Open a connection every round, add traffic to all, close some.
		c := conn(next, tracer.TCP, tracer.OUTGOING, fmt.Sprintf("10.0.0.1:%d", 40000+next), "192.0.2.1:443")
		src.set(c)
		active[next] = true
		next++
		opened++
		for k := range active {
			n := uint64(round*7 + int(k))
			src.update(tracer.ConnKey{Cookie: k}, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += n })
			sent += n
		}
		if round%3 == 2 {
			for k := range active {
				src.close(tracer.ConnKey{Cookie: k})
				delete(active, k)
				closed++
				break
			}
		}
		// a scrapes every round, b every fourth.
		mustScrape(t, h, "a")
		if round%4 == 3 {
			mustScrape(t, h, "b")
		}
	}
	for _, id := range []string{"a", "b"} {
		s := mustScrape(t, h, id)
		for name, want := range map[string]uint64{
			"conntrace_sent_bytes_total":         sent,
			"conntrace_connections_opened_total": opened,
			"conntrace_connections_closed_total": closed,
			"conntrace_connections":              uint64(len(active)),
		} {
			if got := s.get(t, l.of(name)); got != float64(want) {
				t.Errorf("client %s: %s = %v, want %d", id, name, got, want)
			}
		}
	}
}

// TestConcurrentScrapes scrapes two clients from many goroutines at once
// (run with -race); the totals stay exact.
func TestConcurrentScrapes(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false), WithMaxRequestsInFlight(0))
	l := ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}
	c := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
	src.set(c)
	mustScrape(t, h, "a")
	mustScrape(t, h, "b")

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 20 {
				src.update(c.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 3 })
				scrape(t, h, []string{"a", "b"}[g%2])
			}
		})
	}
	wg.Wait()
	for _, id := range []string{"a", "b"} {
		if got := mustScrape(t, h, id).get(t, l.of("conntrace_sent_bytes_total")); got != 8*20*3 {
			t.Errorf("client %s: sent = %v, want %d", id, got, 8*20*3)
		}
	}
}

// TestNewClientResets: when the source recreated a client's state (it
// expired there), the client's series restart from zero.
func TestNewClientResets(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false))
	c := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
	gone := conn(2, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40001", "192.0.2.99:80")
	src.set(c)
	src.set(gone)
	mustScrape(t, h, "a")
	src.update(c.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 100 })
	src.close(gone.Key)
	l := ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}
	lGone := ls{"tcp", "ipv4", "outgoing", "192.0.2.99", "80"}
	s := mustScrape(t, h, "a")
	if got := s.get(t, l.of("conntrace_sent_bytes_total")); got != 100 {
		t.Fatalf("sent = %v, want 100", got)
	}
	s.get(t, lGone.of("conntrace_sent_bytes_total"))

	h.e.state.RemoveClient(cid("a"))
	src.update(c.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 50 })
	s = mustScrape(t, h, "a") // NewClient: no delta, series restart
	if got := s.get(t, l.of("conntrace_sent_bytes_total")); got != 0 {
		t.Errorf("after NewClient: sent = %v, want 0", got)
	}
	if _, ok := s[lGone.of("conntrace_sent_bytes_total")]; ok {
		t.Errorf("after NewClient: the old label set %v is still served", lGone)
	}
	src.update(c.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 7 })
	if got := mustScrape(t, h, "a").get(t, l.of("conntrace_sent_bytes_total")); got != 7 {
		t.Errorf("sent = %v, want 7", got)
	}
}

// TestLabelSetsPersist: a label set whose connections are all gone keeps
// its counters, with the gauge at 0.
func TestLabelSetsPersist(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithExporterMetrics(false))
	mustScrape(t, h, "a")
	c := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
	c.Monotonic.SentBytes = 10
	src.set(c)
	l := ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}
	if got := mustScrape(t, h, "a").get(t, l.of("conntrace_connections")); got != 1 {
		t.Errorf("connections = %v, want 1", got)
	}
	src.close(c.Key)
	for range 3 {
		s := mustScrape(t, h, "a")
		if got := s.get(t, l.of("conntrace_connections")); got != 0 {
			t.Errorf("connections = %v, want 0", got)
		}
		if got := s.get(t, l.of("conntrace_sent_bytes_total")); got != 10 {
			t.Errorf("sent = %v, want 10", got)
		}
		if got := s.get(t, l.of("conntrace_connections_closed_total")); got != 1 {
			t.Errorf("closed = %v, want 1", got)
		}
	}
}

// TestClientExpiry: a client not scraped for the expiry is dropped, here
// and in the source; one scraped in time is kept.
func TestClientExpiry(t *testing.T) {
	src := newFakeSource()
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	h := NewHandler(src, WithExporterMetrics(false), WithClientStateExpiry(time.Minute), withClock(clock.now))
	st := h.e.state
	held := func(want ...string) {
		t.Helper()
		var got []string
		for _, id := range []string{"a", "b", "c", "d"} {
			if st.HasClient(cid(id)) {
				got = append(got, id)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("clients held %v, want %v", got, want)
		}
	}

	mustScrape(t, h, "a")
	mustScrape(t, h, "b")
	clock.advance(40 * time.Second)
	mustScrape(t, h, "b")
	clock.advance(40 * time.Second) // a: 80s, b: 40s
	mustScrape(t, h, "c")
	held("b", "c")
	clock.advance(30 * time.Second) // b: 70s, c: 30s
	mustScrape(t, h, "c")
	held("c")

	// A client scraping after its own expiry is dropped first: it starts
	// anew, as it does in the source.
	c := conn(1, tracer.TCP, tracer.OUTGOING, "10.0.0.1:40000", "192.0.2.1:443")
	src.set(c)
	mustScrape(t, h, "c")
	src.update(c.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 5 })
	l := ls{"tcp", "ipv4", "outgoing", "192.0.2.1", "443"}
	if got := mustScrape(t, h, "c").get(t, l.of("conntrace_sent_bytes_total")); got != 5 {
		t.Fatalf("sent = %v, want 5", got)
	}
	clock.advance(time.Minute + time.Second)
	src.update(c.Key, func(c *tracer.ConnectionStats) { c.Monotonic.SentBytes += 5 })
	if got := mustScrape(t, h, "c").get(t, l.of("conntrace_sent_bytes_total")); got != 0 {
		t.Errorf("sent after expiry = %v, want 0 (a new client)", got)
	}
	held("c")

	// Without any scrape, the drain's calls expire clients too: memory is
	// bounded with nobody scraping.
	clock.advance(time.Minute + time.Second)
	src.close(c.Key)
	held()
}

// TestTooManyClients: a client the source refuses gets a 503 whose body
// names the reason, and leaves no state behind.
func TestTooManyClients(t *testing.T) {
	src := newFakeSource()
	h := NewHandler(src, WithMaxClients(1))
	mustScrape(t, h, "a")

	code, body := scrape(t, h, "b")
	if code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", code)
	}
	for _, want := range []string{`client "b@192.0.2.1"`, "too many clients", "--tracer.max-clients"} {
		if !strings.Contains(body, want) {
			t.Errorf("body %q does not contain %q", body, want)
		}
	}
	// The refused request is counted by the exporter's own metrics.
	s := mustScrape(t, h, "a")
	if got := s.get(t, `promhttp_metric_handler_requests_total{code="503"}`); got != 1 {
		t.Errorf("promhttp_metric_handler_requests_total{code=503} = %v, want 1", got)
	}
}

// TestSourceError: any other failure of the source is a 500 naming it.
func TestSourceError(t *testing.T) {
	src := newFakeSource()
	src.err = fmt.Errorf("reading the connection map: %w", errFake)
	h := NewHandler(src, WithExporterMetrics(false))
	code, body := scrape(t, h, "a")
	if code != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", code)
	}
	if !strings.Contains(body, "reading the connection map: fake failure") {
		t.Errorf("body %q does not name the error", body)
	}
	if got := h.e.state.Clients(); got != 0 {
		t.Errorf("%d clients held after a failed scrape, want 0", got)
	}
}

// TestCollectorError: the collector alone reports the source's error as an
// invalid metric, so that a registry's Gather fails with it.
func TestCollectorError(t *testing.T) {
	src := newFakeSource()
	o := defaultOptions()
	o.maxClients = 1
	e := newExporter(src, &o)
	if _, err := e.scrape("first"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(trafficCollector{e: e, clientID: "x"})
	_, err := reg.Gather()
	if err == nil || !errors.Is(err, netstate.ErrTooManyClients) {
		t.Errorf("Gather error %v, want one wrapping ErrTooManyClients", err)
	}
}

// TestMaxRequestsInFlight: scrapes beyond the limit get a 503 at once.
func TestMaxRequestsInFlight(t *testing.T) {
	src := newFakeSource()
	// entered holds one signal: the fake's send does not block, and the
	// scrape may reach it before the test waits (it hung once, under -race).
	src.block, src.entered = make(chan struct{}), make(chan struct{}, 1)
	h := NewHandler(src, WithExporterMetrics(false), WithMaxRequestsInFlight(1))
	done := make(chan int)
	go func() {
		code, _ := scrape(t, h, "a")
		done <- code
	}()
	<-src.entered // a holds the only slot
	code, body := scrape(t, h, "b")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "Limit of concurrent requests reached (1)") {
		t.Errorf("second scrape: status %d, body %q; want 503 naming the limit", code, body)
	}
	close(src.block)
	if code := <-done; code != http.StatusOK {
		t.Errorf("in-flight scrape: status %d", code)
	}
	mustScrape(t, h, "b")
}

func TestHealthLostReasons(t *testing.T) {
	src := newFakeSource()
	src.stats = tracer.Stats{
		TrackedConnections:      10,
		TrackedUDPFlows:         3,
		TrackedConnectionsLimit: 100,
		Lost:                    map[string]uint64{tracer.LostDecodeError: 2, "future_reason": 5},
	}
	h := NewHandler(src, WithExporterMetrics(false))
	s := mustScrape(t, h, "a")
	for _, r := range tracer.LostReasons {
		want := 0.0
		if r == tracer.LostDecodeError {
			want = 2
		}
		if got := s.get(t, fmt.Sprintf("conntrace_lost_total{reason=%q}", r)); got != want {
			t.Errorf("lost %s = %v, want %v", r, got, want)
		}
	}
	if got := s.get(t, `conntrace_lost_total{reason="future_reason"}`); got != 5 {
		t.Errorf("lost future_reason = %v, want 5", got)
	}
	for name, want := range map[string]float64{
		`conntrace_tracked_connections{protocol="tcp"}`: 10,
		`conntrace_tracked_connections{protocol="udp"}`: 3,
		"conntrace_tracked_connections_limit":           100,
		"conntrace_clients":                             1,
	} {
		if got := s.get(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if !strings.Contains(strings.Join(keysOf(s), "\n"), "conntrace_exporter_build_info{") {
		t.Error("no conntrace_exporter_build_info")
	}
}
