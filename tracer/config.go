package tracer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/conntrace/conntrace_exporter/filter"
)

// Config holds the settings of the tracer. Field names follow the seed where
// the seed had the same setting.
type Config struct {
	// CollectTCPConns traces TCP connections.
	CollectTCPConns bool
	// CollectUDPConns traces UDP flows.
	CollectUDPConns bool
	// CollectIPv6Conns traces IPv6 connections (IPv4-mapped IPv6 sockets
	// carry IPv4 traffic and are always traced as IPv4).
	CollectIPv6Conns bool
	// TCPConnTimeout is how long a tracked connection that no process holds
	// (an orphan after close(), a socket not yet accepted) keeps being
	// reported with its last values while waiting for its close record.
	// Past it, the connection is forgotten. Every close is reported by a
	// tracepoint, so this only matters when a close record was lost.
	TCPConnTimeout time.Duration
	// UDPConnTimeout closes a UDP flow (a socket and one peer) that carried
	// no datagram for this long; it is then counted as closed, once.
	UDPConnTimeout time.Duration
	// UDPHook chooses how UDP byte counts are read: "tracepoint" (the
	// sock_send_length/sock_recv_length BTF tracepoints, Linux 6.3+),
	// "fentry" (fexit programs on udp_sendmsg/udp_recvmsg, for older
	// kernels with BPF trampolines), "kprobe" (kprobes on the same) or
	// "auto" (the first of these three the kernel offers, else no UDP,
	// said at start-up).
	UDPHook string
	// TCPIterator chooses how TCP finds its sockets at start-up and reads
	// their live values at each scrape: "task_file" (every process's open
	// files, every namespace, in one pass: a scrape costs the host's open
	// files), "tcp" (iter/tcp in each network namespace: a scrape costs
	// namespaces × TCP sockets, and reads the sockets no process holds
	// too) or "auto" (task_file where this kernel's verifier takes it,
	// else tcp).
	TCPIterator string
	// MaxTrackedConnections bounds the connections tracked in the kernel.
	// Connections beyond it are counted in conntrace_lost_total{reason="tracked_connections_full"}.
	MaxTrackedConnections uint32
	// MaxClosedConnectionsBuffered bounds the closed connections that
	// wait, once for all clients, for the next conntrack dump to find
	// their NAT (EnableConntrack); past it they are counted at once
	// without it (LostConntrackStateFull). Closed connections are
	// otherwise never held: they are folded into every client's series
	// when drained (netstate).
	MaxClosedConnectionsBuffered int
	// MaxConnectionsStateBuffered is the seed's bound on the baselines a
	// client held per connection alive at its first scrape. Unused: a
	// client holds nothing per connection (netstate's series offsets),
	// so nothing is left to bound. Kept for the seed's API and flag set.
	MaxConnectionsStateBuffered int
	// ClientStateExpiry drops a client not seen for this long.
	ClientStateExpiry time.Duration
	// MaxClients bounds the clients held at once; a new client beyond it is
	// refused until one expires.
	MaxClients int
	// ProcRoot is the root of the proc file system (to find network
	// namespaces and processes).
	ProcRoot string
	// CgroupPath is the cgroup v2 directory the sockops program attaches to.
	// Empty means: the root of the first cgroup2 mount in /proc/self/mountinfo.
	CgroupPath string
	// ClosedRingBufferBytes is the size of the kernel ring buffer that carries
	// closed connections to user space (a power of two, multiple of the page size).
	ClosedRingBufferBytes uint32
	// BPFDebug makes the verifier log available in load errors.
	BPFDebug bool
	// KprobeProfile is the kprobe_profile file to read probe hits and
	// misses from; empty: defaultKprobeProfiles.
	KprobeProfile string
	// BPFStats turns on the kernel's BPF run statistics (run count and time
	// of every program, for conntrace_bpf_program_runs_total and
	// _run_seconds_total) while the tracer runs.
	BPFStats bool
	// EnableConntrack looks up the NAT of connections in the kernel's
	// conntrack tables, over netlink.
	EnableConntrack bool
	// ConntrackMaxStateSize bounds the NAT entries held.
	ConntrackMaxStateSize int
	// ConntrackInterval is the least time between two dumps of the conntrack
	// tables (a dump happens only when a new connection waits for one).
	ConntrackInterval time.Duration
	// DNSInspection reads the DNS answers the host receives (UDP) and maps
	// addresses to names.
	DNSInspection bool
	// IncomingHandshakes times the handshakes of incoming TCP connections
	// from their SYN (a slot of a kernel table per SYN, BENCHMARKS.md
	// §15). Off, only outgoing handshakes are timed.
	IncomingHandshakes bool
	// CollectLocalDNS traces DNS traffic to a loopback server (a local
	// resolver); off, as in the seed, such connections are not reported.
	CollectLocalDNS bool
	// DNSCacheSize bounds the addresses held by reverse DNS.
	DNSCacheSize int
	// DNSCacheBytes bounds the memory the names of reverse DNS hold.
	DNSCacheBytes int
	// DNSCacheTTL forgets an address not answered nor looked up for this long.
	DNSCacheTTL time.Duration
	// Filters selects the connections traced (from the --config.file);
	// nil traces everything. Not a flag.
	Filters *filter.ConnectionFilters
	// Cgroups names the cgroups of connections (Tracer.Cgroup): set when
	// a label shows them (--collector.labels). Not a flag.
	Cgroups bool
	// CgroupFilter selects the connections traced by cgroup (the
	// --config.file's cgroups); nil traces every cgroup. Not a flag.
	CgroupFilter *filter.CgroupFilter
}

// NewDefaultConfig returns the default configuration.
func NewDefaultConfig() *Config {
	return &Config{
		CollectTCPConns:              true,
		CollectUDPConns:              true,
		CollectIPv6Conns:             true,
		TCPConnTimeout:               2 * time.Minute,
		UDPConnTimeout:               30 * time.Second,
		UDPHook:                      UDPHookAuto,
		TCPIterator:                  TCPIteratorAuto,
		MaxTrackedConnections:        65536,
		MaxClosedConnectionsBuffered: 50000,
		MaxConnectionsStateBuffered:  2 * 65536, // the seed's default; unused
		ClientStateExpiry:            10 * time.Minute,
		MaxClients:                   16,
		ProcRoot:                     "/proc",
		ClosedRingBufferBytes:        8 << 20,
		EnableConntrack:              true,
		ConntrackMaxStateSize:        65536,
		ConntrackInterval:            5 * time.Second,
		DNSInspection:                true,
		IncomingHandshakes:           true,
		DNSCacheSize:                 100000,
		DNSCacheBytes:                32 << 20,
		DNSCacheTTL:                  3 * time.Minute,
	}
}

// clone returns a copy of c (Filters shared: it is never changed).
func (c *Config) clone() *Config {
	d := *c
	return &d
}

// FieldError is a problem with one Config field. Validate, and tracer.New
// for a setting the kernel cannot honour, return them (Validate joins one
// per bad field with errors.Join), so that a caller can name its own
// setting for the field (FlagErrors names the flag) without reading the
// message.
type FieldError struct {
	// Field is the name of the Config field.
	Field string
	// Value is the field's value as the message shows it, printed with %v
	// after the field name; nil: the message shows none.
	Value any
	// Msg says what is wrong; Err, if not nil, is the cause, after Msg.
	Msg string
	Err error
}

// Error reads "Field Value: Msg: Err", without the parts that are empty:
// "MaxClients 0: must be at least 1", "ProcRoot: must not be empty".
func (e *FieldError) Error() string { return e.Field + e.rest() }

// rest is the message after the field name.
func (e *FieldError) rest() string {
	var b strings.Builder
	if e.Value != nil {
		fmt.Fprintf(&b, " %v", e.Value)
	}
	if e.Msg != "" {
		b.WriteString(": " + e.Msg)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause, if any.
func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks every field and returns one *FieldError per field out of
// range, joined with errors.Join; nil if all are valid.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field string, value any, msg string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Msg: msg})
	}
	if c.TCPConnTimeout < time.Second {
		bad("TCPConnTimeout", c.TCPConnTimeout, "must be at least 1s")
	}
	if c.UDPConnTimeout < time.Second {
		bad("UDPConnTimeout", c.UDPConnTimeout, "must be at least 1s")
	}
	switch c.UDPHook {
	case UDPHookAuto, UDPHookTracepoint, UDPHookFentry, UDPHookKprobe:
	default:
		// Quoted: an empty or odd value stays visible.
		bad("UDPHook", strconv.Quote(c.UDPHook), fmt.Sprintf("must be %q, %q, %q or %q", UDPHookAuto, UDPHookTracepoint, UDPHookFentry, UDPHookKprobe))
	}
	switch c.TCPIterator {
	case TCPIteratorAuto, TCPIteratorTaskFile, TCPIteratorTCP:
	default:
		bad("TCPIterator", strconv.Quote(c.TCPIterator), fmt.Sprintf("must be %q, %q or %q", TCPIteratorAuto, TCPIteratorTaskFile, TCPIteratorTCP))
	}
	if c.MaxTrackedConnections < 1 || c.MaxTrackedConnections > 1<<24 {
		bad("MaxTrackedConnections", c.MaxTrackedConnections, fmt.Sprintf("must be between 1 and %d", 1<<24))
	}
	if c.MaxClosedConnectionsBuffered < 1 {
		bad("MaxClosedConnectionsBuffered", c.MaxClosedConnectionsBuffered, "must be at least 1")
	}
	if c.ClientStateExpiry < time.Second {
		bad("ClientStateExpiry", c.ClientStateExpiry, "must be at least 1s")
	}
	if c.MaxClients < 1 {
		bad("MaxClients", c.MaxClients, "must be at least 1")
	}
	if c.ConntrackMaxStateSize < 1 {
		bad("ConntrackMaxStateSize", c.ConntrackMaxStateSize, "must be at least 1")
	}
	if c.ConntrackInterval < 100*time.Millisecond {
		bad("ConntrackInterval", c.ConntrackInterval, "must be at least 100ms")
	}
	if c.DNSCacheSize < 1 {
		bad("DNSCacheSize", c.DNSCacheSize, "must be at least 1")
	}
	if c.DNSCacheBytes < 4096 {
		bad("DNSCacheBytes", c.DNSCacheBytes, "must be at least 4096")
	}
	if c.DNSCacheTTL < time.Second {
		bad("DNSCacheTTL", c.DNSCacheTTL, "must be at least 1s")
	}
	if c.ProcRoot == "" {
		bad("ProcRoot", nil, "must not be empty")
	}
	rb := c.ClosedRingBufferBytes
	if rb < 4096 || rb&(rb-1) != 0 {
		bad("ClosedRingBufferBytes", rb, "must be a power of two of at least 4096")
	}
	if !c.CollectTCPConns && !c.CollectUDPConns {
		bad("CollectTCPConns", nil, "is false and so is CollectUDPConns: nothing would be traced")
	}
	return errors.Join(errs...)
}
