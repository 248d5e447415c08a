package collector

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// tracerFlagNames maps each tracer.Config field to its flag, so that the
// messages of Config.Validate, which name fields, can name flags instead.
var tracerFlagNames = map[string]string{
	"CollectTCPConns":              "tracer.collect-tcp",
	"CollectUDPConns":              "tracer.collect-udp",
	"CollectIPv6Conns":             "tracer.collect-ipv6",
	"TCPConnTimeout":               "tracer.tcp-conn-timeout",
	"UDPConnTimeout":               "tracer.udp-conn-timeout",
	"UDPHook":                      "tracer.udp-hook",
	"MaxTrackedConnections":        "tracer.max-tracked-connections",
	"MaxClosedConnectionsBuffered": "tracer.max-closed-connections-buffered",
	"MaxConnectionsStateBuffered":  "tracer.max-connections-state-buffered",
	"ClientStateExpiry":            "tracer.client-state-expiry",
	"MaxClients":                   "tracer.max-clients",
	"ProcRoot":                     "tracer.proc-root",
	"CgroupPath":                   "tracer.cgroup-path",
	"ClosedRingBufferBytes":        "tracer.ring-buffer-bytes",
	"BPFDebug":                     "tracer.bpf-debug",
	"BPFStats":                     "tracer.bpf-stats",
	"KprobeProfile":                "tracer.kprobe-profile",
	"EnableConntrack":              "tracer.enable-conntrack",
	"ConntrackMaxStateSize":        "tracer.conntrack-max-state-size",
	"ConntrackInterval":            "tracer.conntrack-interval",
	"DNSInspection":                "tracer.dns-inspection",
	"CollectLocalDNS":              "tracer.collect-local-dns",
	"DNSCacheSize":                 "tracer.dns-cache-size",
	"DNSCacheBytes":                "tracer.dns-cache-bytes",
	"DNSCacheTTL":                  "tracer.dns-cache-ttl",
}

// tracerFieldsWithoutFlag are the tracer.Config fields that no --tracer.*
// flag sets, and where they come from instead.
var tracerFieldsWithoutFlag = map[string]string{
	"Filters": "config.file",
}

// AddTracerFlags adds a --tracer.* flag for every field of tracer.Config
// (but those of tracerFieldsWithoutFlag) to
// app, with the defaults of tracer.NewDefaultConfig, and returns the
// configuration the flags fill when app is parsed.
func AddTracerFlags(app *kingpin.Application) *tracer.Config {
	cfg := tracer.NewDefaultConfig()
	name := func(field string) string { return tracerFlagNames[field] }
	flag := func(field, help string) *kingpin.FlagClause { return app.Flag(name(field), help) }
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	i := func(v int) string { return strconv.Itoa(v) }

	flag("CollectTCPConns", "Trace TCP connections.").
		Default(strconv.FormatBool(cfg.CollectTCPConns)).BoolVar(&cfg.CollectTCPConns)
	flag("CollectUDPConns", "Trace UDP flows (a socket and one peer).").
		Default(strconv.FormatBool(cfg.CollectUDPConns)).BoolVar(&cfg.CollectUDPConns)
	flag("CollectIPv6Conns", "Trace IPv6 connections (IPv4 traffic on IPv6 sockets is always traced, as IPv4).").
		Default(strconv.FormatBool(cfg.CollectIPv6Conns)).BoolVar(&cfg.CollectIPv6Conns)
	flag("TCPConnTimeout", "How long a connection no process holds (after close(), or not yet accepted) keeps its last values while its close record is awaited; then it is forgotten. At least 1s.").
		Default(cfg.TCPConnTimeout.String()).SetValue(newValue(name("TCPConnTimeout"), &cfg.TCPConnTimeout, parseDuration))
	flag("UDPConnTimeout", "A UDP flow that carried no datagram for this long is closed (and counted as closed, once). At least 1s.").
		Default(cfg.UDPConnTimeout.String()).SetValue(newValue(name("UDPConnTimeout"), &cfg.UDPConnTimeout, parseDuration))
	flag("UDPHook", "How UDP bytes are read: tracepoint (sock_send_length, Linux 6.3+), fentry (fexit on udp_sendmsg/udp_recvmsg, older kernels with BPF trampolines), kprobe (kprobes on the same) or auto (the first of these the kernel offers, else no UDP; start-up logs the choice).").
		Default(cfg.UDPHook).StringVar(&cfg.UDPHook) // checked by Validate, whose message names the flag
	flag("MaxTrackedConnections", `Connections tracked in the kernel at once; more are not traced and counted in conntrace_lost_total{reason="tracked_connections_full"}. 1 to 16777216.`).
		Default(u(uint64(cfg.MaxTrackedConnections))).SetValue(newValue(name("MaxTrackedConnections"), &cfg.MaxTrackedConnections, parseUint32))
	flag("MaxClosedConnectionsBuffered", "Closed connections that wait, once for all clients, for the next conntrack dump to find their NAT (--tracer.enable-conntrack; at most one dump per --tracer.conntrack-interval, sooner when half of this wait); past it they are counted at once without it (lost_total{reason=\"conntrack_state_full\"}). Closed connections are otherwise never held: they are folded into every client's counters when drained. At least 1.").
		Default(i(cfg.MaxClosedConnectionsBuffered)).SetValue(newValue(name("MaxClosedConnectionsBuffered"), &cfg.MaxClosedConnectionsBuffered, parseInt))
	flag("MaxConnectionsStateBuffered", "Baselines held per client of the connections alive at its first scrape (a client's only per-connection state); past it, such a connection counts only its close for that client (lost_total{reason=\"client_state_full\"}). At least 1.").
		Default(i(cfg.MaxConnectionsStateBuffered)).SetValue(newValue(name("MaxConnectionsStateBuffered"), &cfg.MaxConnectionsStateBuffered, parseInt))
	flag("ClientStateExpiry", "Forget a client (scraper address, with its client_id if given) not scraped for this long; its counters then restart. At least 1s.").
		Default(cfg.ClientStateExpiry.String()).SetValue(newValue(name("ClientStateExpiry"), &cfg.ClientStateExpiry, parseDuration))
	flag("MaxClients", "Clients held at once; a scrape from a new client beyond it gets a 503 until one expires. At least 1.").
		Default(i(cfg.MaxClients)).SetValue(newValue(name("MaxClients"), &cfg.MaxClients, parseInt))
	flag("ProcRoot", "Root of the proc file system.").
		Default(cfg.ProcRoot).StringVar(&cfg.ProcRoot)
	flag("CgroupPath", "cgroup v2 directory the sockops program attaches to; empty: the root of the first cgroup2 mount.").
		Default(cfg.CgroupPath).StringVar(&cfg.CgroupPath)
	flag("ClosedRingBufferBytes", "Size in bytes of the kernel ring buffer that carries closed connections to user space; a power of two, at least 4096.").
		Default(u(uint64(cfg.ClosedRingBufferBytes))).SetValue(newValue(name("ClosedRingBufferBytes"), &cfg.ClosedRingBufferBytes, parseUint32))
	flag("BPFDebug", "Include the verifier log in BPF load errors.").
		Default(strconv.FormatBool(cfg.BPFDebug)).BoolVar(&cfg.BPFDebug)
	flag("BPFStats", "Turn on the kernel's BPF run statistics while the exporter runs, for conntrace_bpf_program_runs_total and _run_seconds_total. Costs every BPF program on the host about 20 ns per run.").
		Default(strconv.FormatBool(cfg.BPFStats)).BoolVar(&cfg.BPFStats)
	flag("KprobeProfile", "kprobe_profile file for conntrace_probe_hits and _misses; empty: /sys/kernel/tracing/kprobe_profile, then /sys/kernel/debug/tracing/kprobe_profile. Missing or unreadable: the gauges are absent.").
		Default(cfg.KprobeProfile).StringVar(&cfg.KprobeProfile)
	flag("EnableConntrack", "Look up the NAT of connections in the kernel's conntrack tables (netlink), for nat_remote_addr.").
		Default(strconv.FormatBool(cfg.EnableConntrack)).BoolVar(&cfg.EnableConntrack)
	flag("ConntrackMaxStateSize", `NAT entries held; more are counted in conntrace_lost_total{reason="conntrack_state_full"}. At least 1.`).
		Default(i(cfg.ConntrackMaxStateSize)).SetValue(newValue(name("ConntrackMaxStateSize"), &cfg.ConntrackMaxStateSize, parseInt))
	flag("ConntrackInterval", "Least time between two dumps of the conntrack tables (a dump happens only when a new connection waits for its NAT). At least 100ms.").
		Default(cfg.ConntrackInterval.String()).SetValue(newValue(name("ConntrackInterval"), &cfg.ConntrackInterval, parseDuration))
	flag("DNSInspection", "Read the DNS answers (UDP) the host receives, for conntrace_remote_name_info.").
		Default(strconv.FormatBool(cfg.DNSInspection)).BoolVar(&cfg.DNSInspection)
	flag("CollectLocalDNS", "Report DNS traffic to a loopback resolver (off, as the seed: such connections are left out).").
		Default(strconv.FormatBool(cfg.CollectLocalDNS)).BoolVar(&cfg.CollectLocalDNS)
	flag("DNSCacheSize", "Addresses the reverse DNS cache holds; answers for more are not kept. At least 1.").
		Default(i(cfg.DNSCacheSize)).SetValue(newValue(name("DNSCacheSize"), &cfg.DNSCacheSize, parseInt))
	flag("DNSCacheBytes", "Bytes the names of the reverse DNS cache hold at most; names beyond are not kept (lost_total{reason=\"dns_cache_full\"}). At least 4096.").
		Default(i(cfg.DNSCacheBytes)).SetValue(newValue(name("DNSCacheBytes"), &cfg.DNSCacheBytes, parseInt))
	flag("DNSCacheTTL", "Forget an address no DNS answer nor lookup mentioned for this long. At least 1s.").
		Default(cfg.DNSCacheTTL.String()).SetValue(newValue(name("DNSCacheTTL"), &cfg.DNSCacheTTL, parseDuration))
	return cfg
}

// TracerConfigErrors validates cfg and returns one message per problem, with
// the field names of Config.Validate's messages replaced by flag names
// ("MaxClients 0: must be at least 1" becomes "--tracer.max-clients=0: must
// be at least 1"). It returns nil if cfg is valid.
func TracerConfigErrors(cfg *tracer.Config) []string {
	err := cfg.Validate()
	if err == nil {
		return nil
	}
	var msgs []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if line != "" {
			msgs = append(msgs, fieldToFlag(line))
		}
	}
	return msgs
}

// TracerStartError rewrites an error of tracer.New whose lines start with a
// Config field name (a setting the kernel cannot honour) to name the flag.
func TracerStartError(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = fieldToFlag(l)
	}
	return strings.Join(lines, "\n")
}

// fieldToFlag rewrites a message that starts with a Config field name.
func fieldToFlag(msg string) string {
	end := strings.IndexAny(msg, " :")
	if end < 0 {
		return msg
	}
	name, ok := tracerFlagNames[msg[:end]]
	if !ok {
		return msg
	}
	rest := msg[end:]
	if rest[0] == ' ' {
		// "Field value: why" -> "--flag=value: why"
		rest = "=" + rest[1:]
	}
	return "--" + name + rest
}

// CollectorFlags are the values of the --collector.* flags.
type CollectorFlags struct {
	// Labels is --collector.labels: a comma-separated list of label names.
	Labels string
	// MaxSeries is --collector.max-series.
	MaxSeries int
}

// AddCollectorFlags adds the --collector.* flags to app and returns the
// values they take when app is parsed; Options checks them.
func AddCollectorFlags(app *kingpin.Application) *CollectorFlags {
	f := &CollectorFlags{}
	app.Flag("collector.labels", "Comma-separated labels of the traffic metrics, from: "+strings.Join(labelNames[:], ", ")+
		". Empty: no label, one series per metric. port is the service port (the local port of an incoming connection, "+
		"else the remote port); process is the command name, netns the network namespace inode; an address in an "+
		"address group of --config.file is replaced by the group's CIDR.").
		Default(DefaultLabels).StringVar(&f.Labels)
	app.Flag("collector.max-series", `Label sets held per client; beyond it, new label sets are counted in one overflow series per metric, `+
		`whose labels are all "overflow", and their connections in conntrace_series_overflow_total. 0: no limit.`).
		Default(strconv.Itoa(DefaultMaxSeries)).SetValue(newValue("collector.max-series", &f.MaxSeries, parseInt))
	return f
}

// Options checks the flags and returns the options they select, or one
// message per bad flag, each naming it.
func (f *CollectorFlags) Options() ([]Option, []string) {
	var msgs []string
	labels, err := ParseLabels(f.Labels)
	if err != nil {
		msgs = append(msgs, fmt.Sprintf("--collector.labels=%s: %v", f.Labels, err))
	}
	if f.MaxSeries < 0 {
		msgs = append(msgs, fmt.Sprintf("--collector.max-series=%d: must be at least 0 (0: no limit)", f.MaxSeries))
	}
	if msgs != nil {
		return nil, msgs
	}
	return []Option{WithLabels(labels), WithMaxSeries(f.MaxSeries)}, nil
}

// value is a kingpin.Value whose parse errors name the flag and say what
// was expected: kingpin's own do neither (`strconv.ParseFloat: parsing
// "ten": invalid syntax`).
type value[T any] struct {
	name  string
	p     *T
	parse func(string) (T, error)
}

func newValue[T any](name string, p *T, parse func(string) (T, error)) *value[T] {
	return &value[T]{name: name, p: p, parse: parse}
}

func (v *value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return fmt.Errorf("--%s=%s: %w", v.name, s, err)
	}
	*v.p = x
	return nil
}

func (v *value[T]) String() string { return fmt.Sprint(*v.p) }

func parseInt(s string) (int, error) {
	n, err := strconv.ParseInt(s, 10, strconv.IntSize)
	if err != nil {
		return 0, errors.New("not an integer")
	}
	return int(n), nil
}

func parseUint32(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errors.New("not an integer from 0 to 4294967295")
	}
	return uint32(n), nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("not a duration (such as 500ms, 30s, 2m, 1h)")
	}
	return d, nil
}
