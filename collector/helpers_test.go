package collector

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// scrape serves one request for clientID ("" = none: the client is then
// the request's remote address) and returns the status and the body.
func scrape(t testing.TB, h http.Handler, clientID string) (int, string) {
	t.Helper()
	target := "/metrics"
	if clientID != "" {
		target += "?" + ClientIDParam + "=" + url.QueryEscape(clientID)
	}
	req := httptest.NewRequest(http.MethodGet, target, nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Code, string(body)
}

// mustScrape is scrape that fails the test on a non-200 status.
func mustScrape(t testing.TB, h http.Handler, clientID string) samples {
	t.Helper()
	code, body := scrape(t, h, clientID)
	if code != http.StatusOK {
		t.Fatalf("scrape of %q: status %d, body:\n%s", clientID, code, body)
	}
	return parseSamples(t, body)
}

// samples maps "name{labels}" (as the text format prints it) to its value.
type samples map[string]float64

func parseSamples(t testing.TB, body string) samples {
	t.Helper()
	s := samples{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q: %v", line, err)
		}
		s[line[:i]] = v
	}
	return s
}

// get returns a sample's value, failing the test if it is absent.
func (s samples) get(t testing.TB, key string) float64 {
	t.Helper()
	v, ok := s[key]
	if !ok {
		t.Fatalf("no sample %s", key)
	}
	return v
}

// ls is a traffic label set, printed in the text format's label order.
type ls struct {
	proto, family, dir, remote, port string
}

func (l ls) of(name string) string { return l.bucket(name, "") }

// bucket is of for a histogram bucket: the text format prints le last.
func (l ls) bucket(name, le string) string {
	labels := fmt.Sprintf("direction=%q,family=%q,port=%q,protocol=%q,remote_addr=%q", l.dir, l.family, l.port, l.proto, l.remote)
	if le != "" {
		labels += fmt.Sprintf(",le=%q", le)
	}
	return name + "{" + labels + "}"
}

// conn builds a connection; remote and local are "addr:port".
func conn(cookie uint64, typ tracer.ConnectionType, dir tracer.ConnectionDirection, local, remote string) tracer.ConnectionStats {
	l := netip.MustParseAddrPort(local)
	r := netip.MustParseAddrPort(remote)
	fam := tracer.AFINET
	if r.Addr().Unmap().Is6() {
		fam = tracer.AFINET6
	}
	return tracer.ConnectionStats{
		Key:         tracer.ConnKey{Cookie: cookie},
		Type:        typ,
		Family:      fam,
		Direction:   dir,
		Source:      l.Addr(),
		SPort:       l.Port(),
		Dest:        r.Addr(),
		DPort:       r.Port(),
		Established: true,
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
