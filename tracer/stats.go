package tracer

import (
	"time"

	"github.com/conntrace/conntrace_exporter/cgroup"
)

// Reasons for conntrace_lost_total. Every place where the tracer can fail to
// count something has one.
const (
	// LostTrackedConnectionsFull: a new connection found the tracked
	// connection limit (MaxTrackedConnections) reached and is not traced.
	LostTrackedConnectionsFull = "tracked_connections_full"
	// LostRingBufferFull: a closed connection's final record did not fit in
	// the ring buffer; the bytes since the last scrape of that connection are lost.
	LostRingBufferFull = "ring_buffer_full"
	// LostClientStateFull: a client's baselines
	// (MaxConnectionsStateBuffered) were full at its first scrape, and it
	// missed the traffic of the connections older than it that got none.
	// Never counted since a client holds nothing per connection: kept, at
	// 0, for the alerts and dashboards that name it.
	LostClientStateFull = "client_state_full"
	// LostClientRejected: a scrape from a new client was refused because
	// MaxClients clients are held.
	LostClientRejected = "client_rejected"
	// LostClientEvicted: a client that never came back after its first
	// scrape was dropped to make room for a new one (MaxClients held); its
	// counters restart if it comes back.
	LostClientEvicted = "client_evicted"
	// LostDecodeError: a record from the kernel could not be decoded.
	LostDecodeError = "decode_error"
	// LostConntrackStateFull: NAT entries beyond ConntrackMaxStateSize, or
	// closed connections beyond MaxClosedConnectionsBuffered waiting for
	// the next dump; their connections are counted without their
	// translation.
	LostConntrackStateFull = "conntrack_state_full"
	// LostConntrackError: a conntrack dump failed (ENOBUFS, no conntrack);
	// translations wait for the next dump.
	LostConntrackError = "conntrack_error"
	// LostDNSRingBufferFull: a DNS answer did not fit in its ring buffer.
	LostDNSRingBufferFull = "dns_ring_buffer_full"
	// LostDNSMalformed: a DNS answer could not be read (malformed, or longer
	// than the 512 bytes the kernel copies and unreadable without the rest).
	LostDNSMalformed = "dns_malformed"
	// LostDNSCacheFull: an address or a name of a DNS answer not kept, the
	// reverse DNS cache being full (DNSCacheSize addresses, DNSCacheBytes).
	LostDNSCacheFull = "dns_cache_full"
	// LostRecursionMisses: runs of the tracer's programs the kernel skipped
	// because another BPF program was running on the CPU (events missed).
	LostRecursionMisses = "recursion_misses"
	// LostSocketStorage: a new TCP connection is not traced because the
	// kernel could not make its socket storage (no memory, the socket
	// being freed, or the storage busy on the CPU).
	LostSocketStorage = "socket_storage_error"
	// LostUDPFlowExpiring: a UDP call that came as its flow, idle for
	// UDPConnTimeout, was being closed: its bytes may have missed the
	// flow's final counters (an upper bound).
	LostUDPFlowExpiring = "udp_flow_expiring"
	// LostListenerReadError: a network namespace whose listening ports a
	// scrape could not read (Listeners), once per namespace and scrape.
	LostListenerReadError = "listener_read_error"
	// LostPortResetsFull: a reset without a connection not counted per
	// port (PortResets): the kernel's table of ports was full.
	LostPortResetsFull = "port_resets_full"
)

// LostReasons lists every reason, so that each is exported from the start.
var LostReasons = []string{
	LostTrackedConnectionsFull,
	LostRingBufferFull,
	LostClientStateFull,
	LostClientRejected,
	LostClientEvicted,
	LostDecodeError,
	LostConntrackStateFull,
	LostConntrackError,
	LostDNSRingBufferFull,
	LostDNSMalformed,
	LostDNSCacheFull,
	LostRecursionMisses,
	LostSocketStorage,
	LostUDPFlowExpiring,
	LostListenerReadError,
	LostPortResetsFull,
}

// Stats is the health of the tracer, for the exporter's own metrics.
type Stats struct {
	// DNSUnsolicited counts the DNS answers not read because they answer
	// no query this host sent (same socket and transaction id, within
	// 10 s): forged, or late.
	DNSUnsolicited uint64
	// TrackedConnections is the number of TCP connections tracked in the
	// kernel now, TrackedUDPFlows the UDP flows (as of the last read).
	// MaxTrackedConnections bounds each separately.
	TrackedConnections uint64
	TrackedUDPFlows    uint64
	// TrackedConnectionsLimit is MaxTrackedConnections.
	TrackedConnectionsLimit uint64
	// Lost counts, per reason (see LostReasons), what was not counted.
	Lost map[string]uint64
	// Programs are the attached BPF programs and their run statistics.
	Programs []ProgramStat
	// Probes are the kprobes of kprobe_profile (all tools'), nil when the
	// file is not available (no kprobes, lockdown).
	Probes map[string]ProbeHits
	// Support is what the kernel offered at start-up.
	Support []Capability
	// CloseErrors counts the traced TCP connections that closed with an
	// error on their socket since start-up, by the kernel's error number
	// (ConnectionStats.Errno): what the reasons, "other" above all, were.
	CloseErrors map[uint16]uint64
	// Cgroups are the counts of the cgroups' names (Config.Cgroups or a
	// cgroup filter), nil without.
	Cgroups *cgroup.Stats
	// CgroupFilterTooDeep counts the cgroup filter's checks of sockets
	// deeper than it looks (64 levels: bpf/cgroup.h), traced whatever it
	// says of their ancestors further up.
	CgroupFilterTooDeep uint64
}

// Stats returns the tracer's health.
func (t *Tracer) Stats() Stats {
	s := Stats{
		TrackedConnectionsLimit: uint64(t.cfg.MaxTrackedConnections),
		Lost:                    make(map[string]uint64, len(LostReasons)),
	}
	var v uint64
	if cs, ok := t.CgroupStats(); ok {
		s.Cgroups = &cs
		if t.objs.CgroupFilterTooDeep.Get(&v) == nil {
			s.CgroupFilterTooDeep = v
		}
	}
	if t.objs.Tracked.Get(&v) == nil {
		s.TrackedConnections = v
	}
	if t.objs.LostTrackedFull.Get(&v) == nil {
		s.Lost[LostTrackedConnectionsFull] = v
	}
	if t.objs.LostUdpFlowsFull.Get(&v) == nil {
		s.Lost[LostTrackedConnectionsFull] += v
	}

	if t.objs.LostUdpExpiring.Get(&v) == nil {
		s.Lost[LostUDPFlowExpiring] = v
	}
	if t.objs.LostStorage.Get(&v) == nil {
		s.Lost[LostSocketStorage] = v
	}
	if t.objs.LostRingBufferFull.Get(&v) == nil {
		s.Lost[LostRingBufferFull] = v
	}
	if t.objs.PortResetsFull.Get(&v) == nil {
		s.Lost[LostPortResetsFull] = v
	}
	s.Lost[LostDecodeError] = t.decode.Load()
	s.Lost[LostListenerReadError] = t.listenErrors.Load()
	s.CloseErrors = t.errnos.snapshot()
	if t.ct != nil {
		t.natMu.Lock()
		s.Lost[LostConntrackStateFull] = t.natFull
		t.natMu.Unlock()
		t.ctMu.Lock()
		s.Lost[LostConntrackStateFull] += t.ct.full
		s.Lost[LostConntrackError] = t.ct.errors
		t.ctMu.Unlock()
	}
	t.mu.Lock()
	if t.dns != nil {
		st := t.dns.Stats()
		s.Lost[LostDNSMalformed] = st.Malformed + st.Truncated
		s.Lost[LostDNSCacheFull] = st.CacheFull
	}
	if t.objs.DnsUnsolicited.Get(&v) == nil {
		s.DNSUnsolicited = v
	}
	if t.objs.LostDnsRingBufferFull.Get(&v) == nil {
		s.Lost[LostDNSRingBufferFull] = v
	}
	s.Programs = t.programStats()
	s.Support = t.support
	for _, p := range s.Programs {
		s.Lost[LostRecursionMisses] += p.RecursionMisses
	}
	if probes, err := readKprobeProfile(t.cfg.KprobeProfile); err == nil {
		s.Probes = probes
	}
	s.TrackedUDPFlows = uint64(t.udp.flows) // as of the last read
	t.mu.Unlock()
	return s
}

// ProgramStat is one attached program and its kernel run statistics.
type ProgramStat struct {
	Attachment
	// Runs and RunTime count only while the kernel's BPF statistics are on
	// (Config.BPFStats, kernel.bpf_stats_enabled); Enabled says so.
	Runs    uint64
	RunTime time.Duration
	// RecursionMisses counts runs the kernel skipped because another BPF
	// program was running on the CPU: events this program never saw.
	RecursionMisses uint64
	Enabled         bool
}

// programStats returns every attached program with its statistics. A
// program whose statistics cannot be read is returned with zeros.
func (t *Tracer) programStats() []ProgramStat {
	progs := t.programs()
	out := make([]ProgramStat, 0, len(t.attachments))
	for _, a := range t.attachments {
		ps := ProgramStat{Attachment: a, Enabled: t.stats != nil}
		if p := progs[a.Program]; p != nil {
			if st, err := p.Stats(); err == nil {
				ps.Runs, ps.RunTime, ps.RecursionMisses = st.RunCount, st.Runtime, st.RecursionMisses
			}
		}
		out = append(out, ps)
	}
	return out
}
