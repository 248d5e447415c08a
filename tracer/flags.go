package tracer

import (
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/conntrace/conntrace_exporter/internal/flagvalue"
)

// flagRow is the flag of one Config field.
type flagRow struct {
	field string // the Config field
	flag  string // the flag's name, without "--"
	help  string
}

// flagRows are the --tracer.* flags, one per Config field (but those of
// fieldsWithoutFlag), in the order --help lists them. AddFlags binds each
// to its field by name; FlagErrors names the flag of a FieldError's field.
var flagRows = []flagRow{
	{"CollectTCPConns", "tracer.collect-tcp", "Trace TCP connections."},
	{"CollectUDPConns", "tracer.collect-udp", "Trace UDP flows (a socket and one peer)."},
	{"CollectIPv6Conns", "tracer.collect-ipv6", "Trace IPv6 connections (IPv4 traffic on IPv6 sockets is always traced, as IPv4)."},
	{"TCPConnTimeout", "tracer.tcp-conn-timeout", "How long a connection no process holds (after close(), or not yet accepted) keeps its last values while its close record is awaited; then it is forgotten. At least 1s."},
	{"UDPConnTimeout", "tracer.udp-conn-timeout", "A UDP flow that carried no datagram for this long is closed (and counted as closed, once). At least 1s."},
	// A string: Validate checks it, and FlagErrors names the flag.
	{"UDPHook", "tracer.udp-hook", "How UDP bytes are read: tracepoint (sock_send_length, Linux 6.3+), fentry (fexit on udp_sendmsg/udp_recvmsg, older kernels with BPF trampolines), kprobe (kprobes on the same) or auto (the first of these the kernel offers, else no UDP; start-up logs the choice)."},
	{"TCPIterator", "tracer.tcp-iterator", "How TCP finds its sockets, at start-up and at each scrape: task_file (every process's open files, one pass: a scrape costs the host's open files), tcp (iter/tcp in each network namespace: a scrape costs namespaces × TCP sockets, and reads the sockets no process holds; entering other namespaces needs CAP_SYS_ADMIN, without which their connections are not read) or auto (task_file where the kernel's verifier takes it, else tcp; start-up logs the choice). A forced one the kernel cannot use stops start-up."},
	{"MaxTrackedConnections", "tracer.max-tracked-connections", `Connections tracked in the kernel at once; more are not traced and counted in conntrace_lost_total{reason="tracked_connections_full"}. 1 to 16777216.`},
	{"MaxClosedConnectionsBuffered", "tracer.max-closed-connections-buffered", "Closed connections that wait, once for all clients, for the next conntrack dump to find their NAT (--tracer.enable-conntrack; at most one dump per --tracer.conntrack-interval, sooner when half of this wait); past it they are counted at once without it (lost_total{reason=\"conntrack_state_full\"}). Closed connections are otherwise never held: they are folded into every client's counters when drained. At least 1."},
	{"MaxConnectionsStateBuffered", "tracer.max-connections-state-buffered", "No effect, kept for the seed's flag set: it bounded the baselines a client held per connection alive at its first scrape, and a client now holds nothing per connection."},
	{"ClientStateExpiry", "tracer.client-state-expiry", "Forget a client (scraper address, with its client_id if given) not scraped for this long; its counters then restart. At least 1s."},
	{"MaxClients", "tracer.max-clients", "Clients held at once; a scrape from a new client beyond it gets a 503 until one expires. At least 1."},
	{"ProcRoot", "tracer.proc-root", "Root of the proc file system."},
	{"CgroupPath", "tracer.cgroup-path", "cgroup v2 directory the sockops program attaches to; empty: the root of the first cgroup2 mount."},
	{"ClosedRingBufferBytes", "tracer.ring-buffer-bytes", "Size in bytes of the kernel ring buffer that carries closed connections to user space; a power of two, at least 4096."},
	{"BPFDebug", "tracer.bpf-debug", "Include the verifier log in BPF load errors."},
	{"BPFStats", "tracer.bpf-stats", "Turn on the kernel's BPF run statistics while the exporter runs, for conntrace_bpf_program_runs_total and _run_seconds_total. Costs every BPF program on the host about 20 ns per run."},
	{"KprobeProfile", "tracer.kprobe-profile", "kprobe_profile file for conntrace_probe_hits and _misses; empty: /sys/kernel/tracing/kprobe_profile, then /sys/kernel/debug/tracing/kprobe_profile. Missing or unreadable: the gauges are absent."},
	{"EnableConntrack", "tracer.enable-conntrack", "Look up the NAT of connections in the kernel's conntrack tables (netlink), for nat_remote_addr."},
	{"ConntrackMaxStateSize", "tracer.conntrack-max-state-size", `NAT entries held; more are counted in conntrace_lost_total{reason="conntrack_state_full"}. At least 1.`},
	{"ConntrackInterval", "tracer.conntrack-interval", "Least time between two dumps of the conntrack tables (a dump happens only when a new connection waits for its NAT). At least 100ms."},
	{"DNSInspection", "tracer.dns-inspection", "Read the DNS answers (UDP) the host receives, for conntrace_remote_name_info."},
	{"IncomingHandshakes", "tracer.incoming-handshakes", "Time the handshakes of incoming TCP connections, from their SYN (conntrace_handshake_seconds): a write to a kernel table per SYN, a read at the handshake's end. Off, only outgoing handshakes are timed."},
	{"CollectLocalDNS", "tracer.collect-local-dns", "Report DNS traffic to a loopback resolver (off, as the seed: such connections are left out)."},
	{"DNSCacheSize", "tracer.dns-cache-size", "Addresses the reverse DNS cache holds; answers for more are not kept. At least 1."},
	{"DNSCacheBytes", "tracer.dns-cache-bytes", "Bytes the names of the reverse DNS cache hold at most; names beyond are not kept (lost_total{reason=\"dns_cache_full\"}). At least 4096."},
	{"DNSCacheTTL", "tracer.dns-cache-ttl", "Forget an address no DNS answer nor lookup mentioned for this long. At least 1s."},
}

// fieldsWithoutFlag are the Config fields that no --tracer.* flag sets, and
// the flag they come from instead.
var fieldsWithoutFlag = map[string]string{
	"Filters":      "config.file",
	"CgroupFilter": "config.file",
	"Cgroups":      "collector.labels",
}

// flagOf returns the flag (without "--") of a Config field, "" if none.
func flagOf(field string) string {
	for _, r := range flagRows {
		if r.field == field {
			return r.flag
		}
	}
	return ""
}

// AddFlags adds a --tracer.* flag for every row of flagRows to app, with the
// defaults of NewDefaultConfig, and returns the configuration the flags fill
// when app is parsed. A value that does not parse is refused with a message
// naming the flag; Validate checks the ranges (FlagErrors names the flags).
func AddFlags(app *kingpin.Application) *Config {
	cfg := NewDefaultConfig()
	fields := reflect.ValueOf(cfg).Elem()
	for _, r := range flagRows {
		f := fields.FieldByName(r.field)
		if !f.IsValid() {
			panic("tracer: flag --" + r.flag + " names Config." + r.field + ", which does not exist")
		}
		fl := app.Flag(r.flag, r.help)
		switch p := f.Addr().Interface().(type) {
		case *bool:
			fl.Default(strconv.FormatBool(*p)).BoolVar(p)
		case *string:
			fl.Default(*p).StringVar(p)
		case *int:
			fl.Default(strconv.Itoa(*p)).SetValue(flagvalue.New(r.flag, p, flagvalue.ParseInt))
		case *uint32:
			fl.Default(strconv.FormatUint(uint64(*p), 10)).SetValue(flagvalue.New(r.flag, p, flagvalue.ParseUint32))
		case *time.Duration:
			fl.Default(p.String()).SetValue(flagvalue.New(r.flag, p, flagvalue.ParseDuration))
		default:
			panic(fmt.Sprintf("tracer: Config.%s is a %T, which no flag parses", r.field, p))
		}
	}
	return cfg
}

// FlagErrors returns one message per error err joins (errors.Join; err
// itself if it joins none), each *FieldError naming the flag of its field
// instead of the field: "MaxClients 0: must be at least 1" becomes
// "--tracer.max-clients=0: must be at least 1", "ProcRoot: must not be
// empty" "--tracer.proc-root: must not be empty". A field without a flag
// keeps its name; other errors keep their text. It returns nil if err is
// nil.
func FlagErrors(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var msgs []string
		for _, e := range j.Unwrap() {
			msgs = append(msgs, FlagErrors(e)...)
		}
		return msgs
	}
	// Only an error that is a FieldError starts with the field name: one
	// that wraps it starts with its own words.
	fe, ok := err.(*FieldError)
	if !ok {
		return []string{err.Error()}
	}
	name := flagOf(fe.Field)
	if name == "" {
		return []string{fe.Error()}
	}
	rest := fe.rest()
	if fe.Value != nil {
		// " value: why" -> "=value: why"
		rest = "=" + rest[1:]
	}
	return []string{"--" + name + rest}
}
