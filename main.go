// Command conntrace_exporter traces TCP connections and UDP flows with eBPF
// and serves, per scrape client, per-peer counters of bytes, retransmits and
// RTT.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	slgk "github.com/tjhop/slog-gokit"

	"github.com/conntrace/conntrace_exporter/collector"
	"github.com/conntrace/conntrace_exporter/filter"
	"github.com/conntrace/conntrace_exporter/tracer"
)

const name = "conntrace_exporter"

func main() {
	var (
		metricsPath = kingpin.Flag("web.telemetry-path", "Path under which to expose metrics.").
				Default("/metrics").String()
		maxRequests = kingpin.Flag("web.max-requests", "Maximum number of parallel scrape requests. Use 0 to disable.").
				Default("40").Int()
		disableExporterMetrics = kingpin.Flag("web.disable-exporter-metrics", "Exclude metrics about the exporter itself (promhttp_*, process_*, go_*).").
					Bool()
		logLevel = kingpin.Flag("log.level", "Only log messages with the given severity or above. One of: [debug, info, warn, error]").
				Default("info").Enum("debug", "info", "warn", "error")
		logFormat = kingpin.Flag("log.format", "Output format of log messages. One of: [logfmt, json]").
				Default("logfmt").Enum("logfmt", "json")
		configFile = kingpin.Flag("config.file", "YAML file with connection filters (excluded_/included_ source/destination connections) "+
			"and address groups (address_groups: CIDRs that replace the addresses inside them as label values). Empty: none.").
			Default("").String()
		autoMemLimit = kingpin.Flag("auto-gomemlimit", "Set the Go runtime's soft memory limit (GOMEMLIMIT) to --auto-gomemlimit.ratio of the memory limit of the exporter's cgroup (v1 or v2), so that the garbage collector works harder before the kernel kills the exporter for its memory. Not applied when the GOMEMLIMIT environment variable is set.").
				Default("true").Bool()
		autoMemLimitRatio = kingpin.Flag("auto-gomemlimit.ratio", "The fraction of the cgroup's memory limit that --auto-gomemlimit gives the Go runtime, in (0, 1].").
					Default("0.9").Float64()
		debugAddr = kingpin.Flag("debug.listen-address", "Address of the debug endpoints (pprof, expvar, /debug/net_state, /debug/net_maps, /debug/ports), plain HTTP; empty: off. They show every connection of the host: bind them to localhost.").
				Default("").String()
		toolkitFlags   = kingpinflag.AddFlags(kingpin.CommandLine, ":9476")
		cfg            = tracer.AddFlags(kingpin.CommandLine)
		collectorFlags = collector.AddCollectorFlags(kingpin.CommandLine)
	)
	kingpin.CommandLine.Name = name
	kingpin.CommandLine.Help = "Traces TCP connections and UDP flows with eBPF and serves per-peer counters, per scrape client, to Prometheus."
	kingpin.Version(version.Print(name))
	kingpin.HelpFlag.Short('h')
	if _, err := kingpin.CommandLine.Parse(os.Args[1:]); err != nil {
		kingpin.Errorf("%s, try --help", err)
		os.Exit(2)
	}
	collectorOpts, msgs := collectorFlags.Options()
	cfg.Cgroups = collectorFlags.Cgroups()
	msgs = append(tracer.FlagErrors(cfg.Validate()), msgs...)
	if r := *autoMemLimitRatio; !(r > 0 && r <= 1) {
		msgs = append(msgs, fmt.Sprintf("--auto-gomemlimit.ratio=%v: must be in (0, 1]", r))
	}
	if msgs != nil {
		for _, m := range msgs {
			kingpin.Errorf("%s", m)
		}
		os.Exit(2)
	}

	// One logging setup: go-kit, filtered by level. Libraries that want a
	// *slog.Logger get a bridge to the same logger (slog-gokit adds its own
	// caller, so the bridge's base has none, and noTime leaves the
	// timestamp to the go-kit "ts").
	var base log.Logger
	if *logFormat == "json" {
		base = log.NewJSONLogger(log.NewSyncWriter(os.Stderr))
	} else {
		base = log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr))
	}
	base = level.NewFilter(log.With(base, "ts", log.DefaultTimestampUTC), level.Allow(level.ParseDefault(*logLevel, level.InfoValue())))
	logger := log.With(base, "caller", log.DefaultCaller)
	slogger := slog.New(noTime{slgk.NewGoKitHandler(base, slog.LevelDebug)}) // the go-kit filter decides

	level.Info(logger).Log("msg", "Starting "+name, "version", version.Info())
	level.Info(logger).Log("msg", "Build context", "build_context", version.BuildContext())
	if *autoMemLimit {
		setMemoryLimit(logger, *autoMemLimitRatio)
	}

	if *configFile != "" {
		fc, err := filter.LoadConfigFile(*configFile)
		if err != nil {
			// One line per error: the loader names the file, the key and
			// the entry of each.
			for _, line := range strings.Split(err.Error(), "\n") {
				level.Error(logger).Log("msg", "Invalid --config.file", "err", line)
			}
			os.Exit(2)
		}
		cfg.Filters = fc.Filters
		cfg.CgroupFilter = fc.Cgroups
		if len(fc.AddressGroups) > 0 {
			collectorOpts = append(collectorOpts, collector.WithAddressGroups(fc.Group))
		}
		level.Info(logger).Log("msg", "Loaded the config file", "file", *configFile,
			"filters", fc.Filters != nil, "address_groups", len(fc.AddressGroups), "cgroup_filter", fc.Cgroups != nil)
	}

	t, err := tracer.New(cfg, logger)
	if err != nil {
		level.Error(logger).Log("msg", "Cannot start the tracer", "err", strings.Join(tracer.FlagErrors(err), "\n"))
		os.Exit(1)
	}
	for _, a := range t.Attachments() {
		level.Info(logger).Log("msg", "Attached BPF program", "program", a.Program, "hook", a.Hook, "attach", a.Attach)
	}

	mux := http.NewServeMux()
	metrics := collector.NewHandler(t, append(collectorOpts,
		collector.WithClientStateExpiry(cfg.ClientStateExpiry),
		collector.WithMaxClients(cfg.MaxClients),
		collector.WithMaxRequestsInFlight(*maxRequests),
		collector.WithExporterMetrics(!*disableExporterMetrics),
		collector.WithLogger(logger),
	)...)
	mux.Handle(*metricsPath, metrics)
	if *metricsPath != "/" && *metricsPath != "" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "Conntrace Exporter",
			Description: "Per-peer TCP and UDP traffic counters traced with eBPF",
			// No pprof here: debug endpoints get their own, opt-in address.
			Profiling: "false",
			Version:   version.Info(),
			Links: []web.LandingLinks{{
				Address: *metricsPath,
				Text:    "Metrics",
				Description: "Each scraper is a client with its own counters: add ?" + collector.ClientIDParam +
					"=NAME to select the client (default: the scraper's address).",
			}},
		})
		if err != nil {
			level.Error(logger).Log("msg", "Cannot build the landing page", "err", err)
			t.Close()
			os.Exit(1)
		}
		mux.Handle("/", landing)
	}

	var debugServer *http.Server
	if *debugAddr != "" {
		debugServer = &http.Server{Addr: *debugAddr, Handler: collector.NewDebugHandler(t, metrics.State()), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := debugServer.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				level.Error(logger).Log("msg", "Debug endpoints failed", "address", *debugAddr, "err", err)
			}
		}()
		level.Info(logger).Log("msg", "Debug endpoints", "address", *debugAddr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- web.ListenAndServe(server, toolkitFlags, slogger) }()

	code := 0
	select {
	case err := <-served:
		level.Error(logger).Log("msg", "HTTP server failed", "err", err)
		code = 1
	case <-ctx.Done():
		level.Info(logger).Log("msg", "Shutting down")
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := server.Shutdown(shutdownCtx); err != nil {
			level.Warn(logger).Log("msg", "HTTP server shutdown", "err", err)
		}
		cancel()
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			level.Warn(logger).Log("msg", "HTTP server", "err", err)
		}
	}
	if debugServer != nil {
		debugServer.Close()
	}
	if err := t.Close(); err != nil {
		level.Error(logger).Log("msg", "Closing the tracer", "err", err)
		code = 1
	}
	os.Exit(code)
}

// noTime drops the slog record's time: the go-kit logger stamps "ts".
type noTime struct{ slog.Handler }

func (h noTime) Handle(ctx context.Context, r slog.Record) error {
	r.Time = time.Time{}
	return h.Handler.Handle(ctx, r)
}

func (h noTime) WithAttrs(attrs []slog.Attr) slog.Handler {
	return noTime{h.Handler.WithAttrs(attrs)}
}

func (h noTime) WithGroup(name string) slog.Handler { return noTime{h.Handler.WithGroup(name)} }
