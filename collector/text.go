package collector

import (
	"bufio"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/conntrace/conntrace_exporter/netstate"
	"github.com/conntrace/conntrace_exporter/tracer"
)

// The traffic metrics of a view, written straight in the text format
// (0.0.4): the same samples the const metrics give (textMatchesConstMetrics
// tests it), without building them. Each series' label pairs are rendered
// once, when the series is made (labeler.Text), and each sample is then a
// few appends: a scrape of 2,000 series took 196 ms through client_golang's
// registry and encoder, mostly its per-sample consistency checks, sorting
// and label escaping (BENCHMARKS.md). Other formats (protobuf) take the
// registry's way.

// labelText renders label values as the text format's label pairs,
// sorted by name as client_golang sorts them: name="value",... with \, "
// and newlines escaped. values are in the order of names.
func labelText(names, values []string) string {
	return labelTextOrdered(names, sortedOrder(names), values)
}

// labelTextOrdered is labelText with the names' order (sortedOrder) given.
func labelTextOrdered(names []string, order []int, values []string) string {
	var b strings.Builder
	for n, i := range order {
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(names[i])
		b.WriteString(`="`)
		b.WriteString(escapeLabel(values[i]))
		b.WriteByte('"')
	}
	return b.String()
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(v string) string { return labelEscaper.Replace(v) }

// textWriter appends samples; numbers as expfmt writes them.
type textWriter struct {
	w   *bufio.Writer
	num []byte
}

func (t *textWriter) header(name, help, typ string) {
	t.w.WriteString("# HELP ")
	t.w.WriteString(name)
	t.w.WriteByte(' ')
	helpEscaper.WriteString(t.w, help)
	t.w.WriteString("\n# TYPE ")
	t.w.WriteString(name)
	t.w.WriteByte(' ')
	t.w.WriteString(typ)
	t.w.WriteByte('\n')
}

// sample writes name{labels,extra} v. extra is a pre-rendered pair (le),
// or empty.
func (t *textWriter) sample(name, labels, extra string, v float64) {
	t.w.WriteString(name)
	if labels != "" || extra != "" {
		t.w.WriteByte('{')
		t.w.WriteString(labels)
		if labels != "" && extra != "" {
			t.w.WriteByte(',')
		}
		t.w.WriteString(extra)
		t.w.WriteByte('}')
	}
	t.w.WriteByte(' ')
	t.float(v)
	t.w.WriteByte('\n')
}

// float writes f as expfmt's writeFloat does.
func (t *textWriter) float(f float64) {
	switch {
	case f == 1:
		t.w.WriteByte('1')
	case f == 0:
		t.w.WriteByte('0')
	case math.IsInf(f, +1):
		t.w.WriteString("+Inf")
	default:
		t.num = strconv.AppendFloat(t.num[:0], f, 'g', -1, 64)
		t.w.Write(t.num)
	}
}

// leText are the le pairs of the exported RTT bounds, and +Inf.
var leText = leTexts(rttBounds)

// leTexts are the le pairs of bounds (seconds), and +Inf.
func leTexts(bounds []float64) []string {
	out := make([]string, 0, len(bounds)+1)
	for _, b := range bounds {
		out = append(out, `le="`+strconv.FormatFloat(b, 'g', -1, 64)+`"`)
	}
	return append(out, `le="+Inf"`)
}

// compareLabels orders two label sets as the registry does: by their
// values in label name order (order: sortedOrder of the names).
func compareLabels(order []int, a, b []string) int {
	for _, i := range order {
		if c := strings.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}

// textFamily is one metric family of a view, to write in the text format.
type textFamily struct {
	name  string
	write func(t *textWriter)
}

// textFamilies returns the view's traffic and per-client families, and the
// names of its peers, in name order; each family's samples in the order
// client_golang's registry gives them (by label values), so that the body
// is the registry's, byte for byte (TestTextMatchesRegistry).
func (e *exporter) textFamilies(v *netstate.View, dns map[netip.Addr][]string) []textFamily {
	d := e.descs
	series := make([]*netstate.Series, len(v.Series))
	for i := range v.Series {
		series[i] = &v.Series[i]
	}
	slices.SortFunc(series, func(a, b *netstate.Series) int { return compareLabels(e.sortedLabels, a.Labels, b.Labels) })
	var tcp []*netstate.Series
	for _, s := range series {
		if s.TCP {
			tcp = append(tcp, s)
		}
	}
	var fams []textFamily
	counter := func(name, help, typ string, of []*netstate.Series, value func(s *netstate.Series) uint64) {
		if len(of) == 0 {
			return // no sample: no family, as the registry
		}
		fams = append(fams, textFamily{name, func(t *textWriter) {
			t.header(name, help, typ)
			for _, s := range of {
				t.sample(name, s.Text, "", float64(value(s)))
			}
		}})
	}
	counter(d.names.sent, d.helps.sent, "counter", series, func(s *netstate.Series) uint64 { return s.SentBytes })
	counter(d.names.recv, d.helps.recv, "counter", series, func(s *netstate.Series) uint64 { return s.RecvBytes })
	counter(d.names.open, d.helps.open, "gauge", series, func(s *netstate.Series) uint64 { return s.Open })
	counter(d.names.opened, d.helps.opened, "counter", series, func(s *netstate.Series) uint64 { return s.Opened })
	counter(d.names.closed, d.helps.closed, "counter", series, func(s *netstate.Series) uint64 { return s.Closed })
	counter(d.names.retransmits, d.helps.retransmits, "counter", tcp, func(s *netstate.Series) uint64 { return s.Retransmits })
	counter(d.names.segments, d.helps.segments, "counter", tcp, func(s *netstate.Series) uint64 { return s.SentSegments })
	for i := range detailMetrics {
		var with []*netstate.Series
		var values []float64
		for _, s := range tcp {
			if v, ok := d.detailValue(i, s); ok {
				with, values = append(with, s), append(values, v)
			}
		}
		if len(with) == 0 {
			continue
		}
		name := d.names.detail[i]
		fams = append(fams, textFamily{name, func(t *textWriter) {
			t.header(name, d.helps.detail[i], "counter")
			for k, s := range with {
				t.sample(name, s.Text, "", values[k])
			}
		}})
	}
	var stalled []*netstate.Series
	for _, s := range tcp {
		if s.ZeroWindowSeen {
			stalled = append(stalled, s)
		}
	}
	counter(d.names.zeroWindow, d.helps.zeroWindow, "gauge", stalled, func(s *netstate.Series) uint64 { return s.ZeroWindow })
	e.timingFamily(&fams, d.names.handshake, d.helps.handshake, tcp, handshakeLE, netstate.HandshakeBounds, func(s *netstate.Series) *netstate.Timing { return &s.Handshakes })
	e.timingFamily(&fams, d.names.duration, d.helps.duration, tcp, durationLE, netstate.DurationBounds, func(s *netstate.Series) *netstate.Timing { return &s.Durations })
	e.reasonFamily(&fams, d.names.failed, d.helps.failed, tcp, func(s *netstate.Series) *[tracer.NumReasons]uint64 { return &s.Failures })
	e.reasonFamily(&fams, d.names.aborted, d.helps.aborted, tcp, func(s *netstate.Series) *[tracer.NumReasons]uint64 { return &s.Aborts })
	if len(tcp) > 0 {
		name := d.names.rtt
		fams = append(fams, textFamily{name, func(t *textWriter) {
			t.header(name, d.helps.rtt, "histogram")
			for _, s := range tcp {
				var cum uint64
				k := 0
				for b, n := range s.RTT.Buckets {
					cum += n
					if b >= rttFirstExp && b <= rttLastExp {
						t.sample(name+"_bucket", s.Text, leText[k], float64(cum))
						k++
					}
				}
				t.sample(name+"_bucket", s.Text, leText[k], float64(cum))
				t.sample(name+"_sum", s.Text, "", float64(s.RTT.SumMicros)/1e6)
				t.sample(name+"_count", s.Text, "", float64(cum))
			}
		}})
	}
	gauge := func(name, help, typ string, v float64) {
		fams = append(fams, textFamily{name, func(t *textWriter) {
			t.header(name, help, typ)
			t.sample(name, "", "", v)
		}})
	}
	gauge(d.names.seriesCount, d.helps.seriesCount, "gauge", float64(v.Own))
	if e.maxSeries > 0 {
		gauge(d.names.seriesLimit, d.helps.seriesLimit, "gauge", float64(e.maxSeries))
	}
	gauge(d.names.overflow, d.helps.overflow, "counter", float64(v.OverflowConns))
	// The names kept (keptNames), written in label order (name, then
	// remote_addr).
	names, dropped := e.keptNames(dns)
	if len(names) > 0 {
		slices.SortFunc(names, func(a, b peerName) int {
			if c := strings.Compare(a.name, b.name); c != 0 {
				return c
			}
			return strings.Compare(a.addr, b.addr)
		})
		fams = append(fams, textFamily{d.names.nameInfo, func(t *textWriter) {
			t.header(d.names.nameInfo, d.helps.nameInfo, "gauge")
			for _, p := range names {
				t.sample(d.names.nameInfo, labelText(nameInfoLabels, []string{p.addr, p.name}), "", 1)
			}
		}})
	}
	gauge(d.names.namesDropped, d.helps.namesDropped, "gauge", float64(dropped))
	slices.SortFunc(fams, func(a, b textFamily) int { return strings.Compare(a.name, b.name) })
	return fams
}

// nameInfoLabels are conntrace_remote_name_info's labels.
var nameInfoLabels = []string{"remote_addr", "name"}

// sortedOrder returns the indexes of names in name order.
func sortedOrder(names []string) []int {
	order := make([]int, len(names))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(names[a], names[b]) })
	return order
}

// reasonFamily adds a family of counters by reason (failures, aborts): a
// sample per label set and reason that counted a connection, with the
// reason label in its place among the others, in the registry's order
// (by label values, the reason's among them). Few label sets fail, so
// their pairs are rendered here, not kept.
func (e *exporter) reasonFamily(fams *[]textFamily, name, help string, of []*netstate.Series, by func(*netstate.Series) *[tracer.NumReasons]uint64) {
	type sample struct {
		values []string
		n      uint64
	}
	var samples []sample
	for _, s := range of {
		for r, n := range by(s) {
			if n != 0 {
				samples = append(samples, sample{append(s.Labels[:len(s.Labels):len(s.Labels)], tracer.Reason(r).String()), n})
			}
		}
	}
	if len(samples) == 0 {
		return // no sample: no family, as the registry
	}
	order := sortedOrder(e.reasonNames)
	slices.SortFunc(samples, func(a, b sample) int { return compareLabels(order, a.values, b.values) })
	*fams = append(*fams, textFamily{name, func(t *textWriter) {
		t.header(name, help, "counter")
		for _, s := range samples {
			t.sample(name, labelTextOrdered(e.reasonNames, order, s.values), "", float64(s.n))
		}
	}})
}

var (
	handshakeLE = leTexts(seconds(netstate.HandshakeBounds))
	durationLE  = leTexts(seconds(netstate.DurationBounds))
)

// timingFamily adds a histogram family of a Timing: the label sets that
// counted an observation (as appendMetrics).
func (e *exporter) timingFamily(fams *[]textFamily, name, help string, of []*netstate.Series, le []string, bounds []uint64, timing func(*netstate.Series) *netstate.Timing) {
	var with []*netstate.Series
	for _, s := range of {
		if timing(s).Count() > 0 {
			with = append(with, s)
		}
	}
	if len(with) == 0 {
		return
	}
	*fams = append(*fams, textFamily{name, func(t *textWriter) {
		t.header(name, help, "histogram")
		for _, s := range with {
			tm := timing(s)
			var cum uint64
			for i := range bounds {
				cum += tm.Buckets[i]
				t.sample(name+"_bucket", s.Text, le[i], float64(cum))
			}
			cum += tm.Buckets[len(bounds)]
			t.sample(name+"_bucket", s.Text, le[len(bounds)], float64(cum))
			t.sample(name+"_sum", s.Text, "", float64(tm.SumMicros)/1e6)
			t.sample(name+"_count", s.Text, "", float64(cum))
		}
	}})
}
