package tracer

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
	// (MaxConnectionsStateBuffered) were full at its first scrape; that
	// client misses the traffic of the connections older than it that got
	// none (their closing is counted).
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
}
