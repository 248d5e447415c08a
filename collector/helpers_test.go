package collector

import (
	"bufio"
	"fmt"
	"io"
	"maps"
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

// cid is the client a scrape of clientID by scrape is: httptest's requests
// come from 192.0.2.1.
func cid(clientID string) string { return clientID + "@192.0.2.1" }

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

// defaultKeys makes the label sets of the default labels, without groups.
var defaultKeys = keyMaker{labels: MustParseLabels(DefaultLabels)}

// keyOf returns the default label set of a connection.
func keyOf(c *tracer.ConnectionStats) labelKey { return defaultKeys.key(c) }

// groupsOf returns an AddressGrouper over the given CIDRs: the most
// specific one that contains the address, as (*filter.FileConfig).Group.
func groupsOf(groups ...netip.Prefix) AddressGrouper {
	return func(a netip.Addr) (netip.Prefix, bool) {
		best, found := netip.Prefix{}, false
		for _, g := range groups {
			if g.Contains(a) && (!found || g.Bits() > best.Bits()) {
				best, found = g, true
			}
		}
		return best, found
	}
}

// parseKey splits a sample key ("name{a="x",b="y"}") into the metric name
// and its labels (values unescaped).
func parseKey(key string) (name string, labels map[string]string) {
	name, rest, ok := strings.Cut(key, "{")
	labels = map[string]string{}
	if !ok {
		return name, labels
	}
	for len(rest) > 0 && rest[0] != '}' {
		eq := strings.Index(rest, `="`)
		if eq < 0 {
			break
		}
		lname := strings.TrimPrefix(rest[:eq], ",")
		var v strings.Builder
		i := eq + 2
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				if rest[i] == 'n' {
					v.WriteByte('\n')
					continue
				}
			}
			v.WriteByte(rest[i])
		}
		labels[lname] = v.String()
		rest = rest[min(i+1, len(rest)):]
	}
	return name, labels
}

// sample is one parsed sample.
type sample struct {
	labels map[string]string
	value  float64
}

// byName parses the samples' labels once: metric name -> its samples.
func (s samples) byName() map[string][]sample {
	idx := map[string][]sample{}
	for key, v := range s {
		n, labels := parseKey(key)
		idx[n] = append(idx[n], sample{labels, v})
	}
	return idx
}

// sum returns the sum of the samples of the metric name (a histogram's
// _bucket samples: those with le).
func (s samples) sum(name, le string) float64 { return sumOf(s.byName(), name, le) }

func sumOf(idx map[string][]sample, name, le string) float64 {
	var total float64
	for _, x := range idx[name] {
		if x.labels["le"] == le {
			total += x.value
		}
	}
	return total
}

// series returns the label sets of the metric name, each as its labels
// (le excepted) printed in order.
func (s samples) series(name string) map[string]bool { return seriesOf(s.byName(), name) }

func seriesOf(idx map[string][]sample, name string) map[string]bool {
	sets := map[string]bool{}
	for _, x := range idx[name] {
		labels := maps.Clone(x.labels)
		delete(labels, "le")
		sets[fmt.Sprint(labels)] = true // fmt prints maps sorted by key
	}
	return sets
}

// find returns the value of the sample of the metric name whose labels
// include sel, failing the test unless exactly one matches.
func (s samples) find(t testing.TB, name string, sel map[string]string) float64 {
	t.Helper()
	var found []float64
	for key, v := range s {
		n, labels := parseKey(key)
		if n != name {
			continue
		}
		ok := true
		for k, want := range sel {
			if labels[k] != want {
				ok = false
			}
		}
		if ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d samples of %s with %v, want 1", len(found), name, sel)
	}
	return found[0]
}
