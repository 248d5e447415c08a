package collector

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/conntrace/conntrace_exporter/netstate"
	"github.com/conntrace/conntrace_exporter/tracer"
)

// Option configures NewHandler.
type Option func(*options)

type options struct {
	expiry          time.Duration
	maxInFlight     int
	exporterMetrics bool
	logger          log.Logger
	now             func() time.Time
	labels          Labels
	maxSeries       int
	group           AddressGrouper
	maxClients      int
}

// DefaultMaxSeries is the default of --collector.max-series.
const DefaultMaxSeries = 2000

func defaultOptions() options {
	cfg := tracer.NewDefaultConfig()
	return options{
		expiry:          cfg.ClientStateExpiry,
		maxClients:      cfg.MaxClients,
		exporterMetrics: true,
		logger:          log.NewNopLogger(),
		now:             time.Now,
		labels:          MustParseLabels(DefaultLabels),
		maxSeries:       DefaultMaxSeries,
	}
}

// WithLabels selects the labels of the traffic metrics (default:
// DefaultLabels).
func WithLabels(l Labels) Option {
	return func(o *options) { o.labels = l }
}

// WithMaxSeries bounds the label sets each client holds (default:
// DefaultMaxSeries); label sets beyond it go to the overflow series (see
// clientState). n <= 0 means no bound.
func WithMaxSeries(n int) Option {
	return func(o *options) { o.maxSeries = n }
}

// WithAddressGroups replaces every remote_addr and local_addr value that
// group places in a group by the group's CIDR (default: no groups). Pass
// (*filter.FileConfig).Group. group is called for every connection of
// every scrape, from concurrent scrapes: it must be safe for concurrent use
// and fast.
func WithAddressGroups(group AddressGrouper) Option {
	return func(o *options) { o.group = group }
}

// WithClientStateExpiry drops a client not scraped for d (pass the
// tracer's ClientStateExpiry).
func WithClientStateExpiry(d time.Duration) Option {
	return func(o *options) { o.expiry = d }
}

// WithMaxClients bounds the clients held (pass the tracer's MaxClients).
func WithMaxClients(n int) Option {
	return func(o *options) { o.maxClients = n }
}

// WithMaxRequestsInFlight bounds the scrapes served at once; more get a 503.
// 0 means no limit.
func WithMaxRequestsInFlight(n int) Option {
	return func(o *options) { o.maxInFlight = n }
}

// WithExporterMetrics enables (default) or disables the exporter's own
// metrics: go_*, process_* and promhttp_*.
func WithExporterMetrics(enabled bool) Option {
	return func(o *options) { o.exporterMetrics = enabled }
}

// WithLogger sets the logger (default: none).
func WithLogger(l log.Logger) Option {
	return func(o *options) { o.logger = l }
}

// withClock sets the clock of client expiry (tests).
func withClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// Handler serves the metrics: each request is one scrape of its client.
type Handler struct {
	http.Handler
	e *exporter
}

// State is the per-client state, for the debug endpoints.
func (h *Handler) State() StateDebug { return h.e.state }

type handler struct {
	e        *exporter
	shared   *prometheus.Registry
	inFlight chan struct{}
	errorLog promhttp.Logger
	logger   log.Logger
}

// NewHandler returns the metrics handler. Each request is one scrape of the
// client ClientID(r): a registry made for the request holds that client's
// traffic metrics, and a shared registry holds what has no client (the
// tracer's health, build info and, unless disabled, the Go, process and
// promhttp metrics).
//
// If the source refuses the client's view, the scrape fails as a whole with
// a 503 (too many clients) or a 500 whose body names the reason, rather than
// serving a partial view.
func NewHandler(src Source, opts ...Option) *Handler {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}

	h := &handler{
		e:        newExporter(src, &o),
		shared:   prometheus.NewRegistry(),
		errorLog: stdlog.New(log.NewStdlibAdapter(level.Error(o.logger)), "", 0),
		logger:   o.logger,
	}
	if o.maxInFlight > 0 {
		h.inFlight = make(chan struct{}, o.maxInFlight)
	}
	h.shared.MustRegister(
		newHealthCollector(src, h.e.state, &h.e.failedScrapes),
		newListenerCollector(src, o.maxSeries, o.logger),
		newPortResetCollector(src, o.maxSeries, o.logger),
		versioncollector.NewCollector("conntrace_exporter"),
	)
	if !o.exporterMetrics {
		return &Handler{Handler: h, e: h.e}
	}
	h.shared.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Handler{Handler: promhttp.InstrumentMetricHandler(h.shared, h), e: h.e}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The in-flight limit is ours, not promhttp's: HandlerOpts'
	// MaxRequestsInFlight counts per promhttp handler, and there is one per
	// request here.
	if h.inFlight != nil {
		select {
		case h.inFlight <- struct{}{}:
			defer func() { <-h.inFlight }()
		default:
			http.Error(w, fmt.Sprintf("Limit of concurrent requests reached (%d), try again later.", cap(h.inFlight)),
				http.StatusServiceUnavailable)
			return
		}
	}

	clientID := ClientID(r)
	v, dns, err := h.e.view(clientID)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, netstate.ErrTooManyClients) {
			code = http.StatusServiceUnavailable
		}
		level.Warn(h.logger).Log("msg", "Scrape refused", "client", clientID, "err", err)
		http.Error(w, "conntrace_exporter: "+err.Error(), code)
		return
	}

	if format := expfmt.Negotiate(r.Header); format.FormatType() == expfmt.TypeTextPlain {
		h.serveText(w, r, format, v, dns)
		return
	}
	// Other formats (protobuf): the const metrics, through the registry.
	reg := prometheus.NewRegistry()
	reg.MustRegister(scrapedCollector{descs: h.e.descs, metrics: h.e.metrics(v, dns)})
	promhttp.HandlerFor(prometheus.Gatherers{reg, h.shared}, promhttp.HandlerOpts{
		ErrorLog:      h.errorLog,
		ErrorHandling: promhttp.HTTPErrorOnError,
	}).ServeHTTP(w, r)
}

// serveText serves a scrape in the text format: the view's metrics written
// straight (see text.go), then the shared registry's, encoded by expfmt.
// Gzip when the scraper accepts it (Prometheus does).
func (h *handler) serveText(w http.ResponseWriter, r *http.Request, format expfmt.Format, v *netstate.View, dns map[netip.Addr][]string) {
	shared, err := h.shared.Gather()
	if err != nil {
		level.Error(h.logger).Log("msg", "Gathering the exporter's own metrics", "err", err)
		http.Error(w, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", string(format))
	var out io.Writer = w
	if acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed) // 8 MB of text: the default level cost 3x the scrape
		defer gz.Close()
		out = gz
	}
	bw := bufio.NewWriterSize(out, 64<<10)
	defer bw.Flush()
	// Both lists in name order, merged: the registry's order.
	t := &textWriter{w: bw}
	enc := expfmt.NewEncoder(bw, format)
	fams := h.e.textFamilies(v, dns)
	for len(fams) > 0 || len(shared) > 0 {
		if len(shared) == 0 || len(fams) > 0 && fams[0].name < shared[0].GetName() {
			fams[0].write(t)
			fams = fams[1:]
			continue
		}
		if err := enc.Encode(shared[0]); err != nil {
			level.Error(h.logger).Log("msg", "Encoding the exporter's own metrics", "err", err)
			return
		}
		shared = shared[1:]
	}
}

// acceptsGzip says whether the request accepts a gzip body.
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) == "gzip" && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}
