package tracer

import (
	"errors"
	"fmt"
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
	// MaxConnectionsStateBuffered bounds, per client, the baselines of
	// the connections alive at the client's first scrape (the only
	// per-connection state a client has). Below StateNeeded(), a busy host
	// can fill it: the connections past it count only their close for that
	// client (LostClientStateFull).
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
	// misses from; empty: DefaultKprobeProfiles.
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
		MaxTrackedConnections:        65536,
		MaxClosedConnectionsBuffered: 50000,
		MaxConnectionsStateBuffered:  2 * 65536, // StateNeeded() of the default MaxTrackedConnections
		ClientStateExpiry:            10 * time.Minute,
		MaxClients:                   16,
		ProcRoot:                     "/proc",
		ClosedRingBufferBytes:        8 << 20,
		EnableConntrack:              true,
		ConntrackMaxStateSize:        65536,
		ConntrackInterval:            5 * time.Second,
		DNSInspection:                true,
		DNSCacheSize:                 100000,
		DNSCacheBytes:                32 << 20,
		DNSCacheTTL:                  3 * time.Minute,
	}
}

// StateNeeded is the baselines a client needs to hold every connection the
// kernel can track at once: MaxTrackedConnections TCP connections and as many
// UDP flows.
func (c *Config) StateNeeded() int { return 2 * int(c.MaxTrackedConnections) }

// Validate checks every field and names the first one out of range.
func (c *Config) Validate() error {
	var errs []error
	if c.TCPConnTimeout < time.Second {
		errs = append(errs, fmt.Errorf("TCPConnTimeout %s: must be at least 1s", c.TCPConnTimeout))
	}
	if c.UDPConnTimeout < time.Second {
		errs = append(errs, fmt.Errorf("UDPConnTimeout %s: must be at least 1s", c.UDPConnTimeout))
	}
	switch c.UDPHook {
	case UDPHookAuto, UDPHookTracepoint, UDPHookFentry, UDPHookKprobe:
	default:
		errs = append(errs, fmt.Errorf("UDPHook %q: must be %q, %q, %q or %q", c.UDPHook, UDPHookAuto, UDPHookTracepoint, UDPHookFentry, UDPHookKprobe))
	}
	if c.MaxTrackedConnections < 1 || c.MaxTrackedConnections > 1<<24 {
		errs = append(errs, fmt.Errorf("MaxTrackedConnections %d: must be between 1 and %d", c.MaxTrackedConnections, 1<<24))
	}
	if c.MaxClosedConnectionsBuffered < 1 {
		errs = append(errs, fmt.Errorf("MaxClosedConnectionsBuffered %d: must be at least 1", c.MaxClosedConnectionsBuffered))
	}
	if c.MaxConnectionsStateBuffered < 1 {
		errs = append(errs, fmt.Errorf("MaxConnectionsStateBuffered %d: must be at least 1", c.MaxConnectionsStateBuffered))
	}
	if c.ClientStateExpiry < time.Second {
		errs = append(errs, fmt.Errorf("ClientStateExpiry %s: must be at least 1s", c.ClientStateExpiry))
	}
	if c.MaxClients < 1 {
		errs = append(errs, fmt.Errorf("MaxClients %d: must be at least 1", c.MaxClients))
	}
	if c.ConntrackMaxStateSize < 1 {
		errs = append(errs, fmt.Errorf("ConntrackMaxStateSize %d: must be at least 1", c.ConntrackMaxStateSize))
	}
	if c.ConntrackInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("ConntrackInterval %s: must be at least 100ms", c.ConntrackInterval))
	}
	if c.DNSCacheSize < 1 {
		errs = append(errs, fmt.Errorf("DNSCacheSize %d: must be at least 1", c.DNSCacheSize))
	}
	if c.DNSCacheBytes < 4096 {
		errs = append(errs, fmt.Errorf("DNSCacheBytes %d: must be at least 4096", c.DNSCacheBytes))
	}
	if c.DNSCacheTTL < time.Second {
		errs = append(errs, fmt.Errorf("DNSCacheTTL %s: must be at least 1s", c.DNSCacheTTL))
	}
	if c.ProcRoot == "" {
		errs = append(errs, errors.New("ProcRoot: must not be empty"))
	}
	rb := c.ClosedRingBufferBytes
	if rb < 4096 || rb&(rb-1) != 0 {
		errs = append(errs, fmt.Errorf("ClosedRingBufferBytes %d: must be a power of two of at least 4096", rb))
	}
	if !c.CollectTCPConns && !c.CollectUDPConns {
		errs = append(errs, errors.New("CollectTCPConns: is false and so is CollectUDPConns: nothing would be traced"))
	}
	return errors.Join(errs...)
}
