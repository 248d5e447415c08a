package collector

import (
	"strconv"
	"strings"

	"github.com/alecthomas/kingpin/v2"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// tracerFlagNames maps each tracer.Config field to its flag, so that the
// messages of Config.Validate, which name fields, can name flags instead.
var tracerFlagNames = map[string]string{
	"CollectTCPConns":              "tracer.collect-tcp",
	"CollectIPv6Conns":             "tracer.collect-ipv6",
	"TCPConnTimeout":               "tracer.tcp-conn-timeout",
	"MaxTrackedConnections":        "tracer.max-tracked-connections",
	"MaxClosedConnectionsBuffered": "tracer.max-closed-connections-buffered",
	"MaxConnectionsStateBuffered":  "tracer.max-connections-state-buffered",
	"ClientStateExpiry":            "tracer.client-state-expiry",
	"MaxClients":                   "tracer.max-clients",
	"ProcRoot":                     "tracer.proc-root",
	"CgroupPath":                   "tracer.cgroup-path",
	"ClosedRingBufferBytes":        "tracer.ring-buffer-bytes",
	"BPFDebug":                     "tracer.bpf-debug",
}

// AddTracerFlags adds a --tracer.* flag for every field of tracer.Config to
// app, with the defaults of tracer.NewDefaultConfig, and returns the
// configuration the flags fill when app is parsed.
func AddTracerFlags(app *kingpin.Application) *tracer.Config {
	cfg := tracer.NewDefaultConfig()
	flag := func(field, help string) *kingpin.FlagClause {
		return app.Flag(tracerFlagNames[field], help)
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	i := func(v int) string { return strconv.Itoa(v) }

	flag("CollectTCPConns", "Trace TCP connections.").
		Default(strconv.FormatBool(cfg.CollectTCPConns)).BoolVar(&cfg.CollectTCPConns)
	flag("CollectIPv6Conns", "Trace IPv6 connections (IPv4 traffic on IPv6 sockets is always traced, as IPv4).").
		Default(strconv.FormatBool(cfg.CollectIPv6Conns)).BoolVar(&cfg.CollectIPv6Conns)
	flag("TCPConnTimeout", "How long a connection no process holds (after close(), or not yet accepted) keeps its last values while its close record is awaited; then it is forgotten. At least 1s.").
		Default(cfg.TCPConnTimeout.String()).DurationVar(&cfg.TCPConnTimeout)
	flag("MaxTrackedConnections", `Connections tracked in the kernel at once; more are not traced and counted in conntrace_lost_total{reason="tracked_connections_full"}. 1 to 16777216.`).
		Default(u(uint64(cfg.MaxTrackedConnections))).Uint32Var(&cfg.MaxTrackedConnections)
	flag("MaxClosedConnectionsBuffered", "Closed connections held per client between two of its scrapes. At least 1.").
		Default(i(cfg.MaxClosedConnectionsBuffered)).IntVar(&cfg.MaxClosedConnectionsBuffered)
	flag("MaxConnectionsStateBuffered", "Per-connection baselines held per client to compute its deltas. At least 1.").
		Default(i(cfg.MaxConnectionsStateBuffered)).IntVar(&cfg.MaxConnectionsStateBuffered)
	flag("ClientStateExpiry", "Forget a client (client_id, else scraper address) not scraped for this long; its counters then restart. At least 1s.").
		Default(cfg.ClientStateExpiry.String()).DurationVar(&cfg.ClientStateExpiry)
	flag("MaxClients", "Clients held at once; a scrape from a new client beyond it gets a 503 until one expires. At least 1.").
		Default(i(cfg.MaxClients)).IntVar(&cfg.MaxClients)
	flag("ProcRoot", "Root of the proc file system.").
		Default(cfg.ProcRoot).StringVar(&cfg.ProcRoot)
	flag("CgroupPath", "cgroup v2 directory the sockops program attaches to; empty: the root of the first cgroup2 mount.").
		Default(cfg.CgroupPath).StringVar(&cfg.CgroupPath)
	flag("ClosedRingBufferBytes", "Size in bytes of the kernel ring buffer that carries closed connections to user space; a power of two, at least 4096.").
		Default(u(uint64(cfg.ClosedRingBufferBytes))).Uint32Var(&cfg.ClosedRingBufferBytes)
	flag("BPFDebug", "Include the verifier log in BPF load errors.").
		Default(strconv.FormatBool(cfg.BPFDebug)).BoolVar(&cfg.BPFDebug)
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
