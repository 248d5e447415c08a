package tracer

import (
	"errors"
	"fmt"
	"io"

	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/bpf"
	"github.com/conntrace/conntrace_exporter/cgroup"
	"github.com/conntrace/conntrace_exporter/dns"
)

// Tracer traces TCP connections with eBPF: it owns the loaded programs,
// their links and maps, and the NetworkState of its clients.
type Tracer struct {
	cfg    *Config
	logger log.Logger
	// afterRead, when set (tests), runs in Snapshot between the read and
	// the drain that follows it, under mu.
	afterRead func()
	// sink receives the connections that leave (see SetSink).
	sink atomic.Pointer[sinkBox]
	// drainMu serialises the drains (the loop's and a snapshot's) and
	// guards what only they touch: the ring buffer readers and their
	// buffers. A drain never takes mu: it never waits for a read.
	drainMu    sync.Mutex
	drainRec   ringbuf.Record
	drainOne   [1]bpf.ConntraceConnRecord
	drainComms comms
	drainBuf   []ConnectionStats
	drainRaw   []bpf.ConntraceConnRecord
	// kmu guards known: the reads hold it while they clamp their records,
	// the drain while it marks closed ones, never during an iterator run.
	kmu sync.Mutex
	// natMu guards natWait: the closed connections whose NAT the next
	// conntrack dump finds (see drainClosed), at most
	// MaxClosedConnectionsBuffered, once for all clients.
	natMu   sync.Mutex
	natWait recordQueue // the records, clamped by known (see wait)
	natFree chunkPool   // natWait's chunks, for reuse
	natFull uint64      // given without their NAT: natWait was full
	// ctMu guards ct; a drain only tries it (a dump holds it long).
	ctMu sync.Mutex

	objs        bpf.ConntraceObjects
	links       []link.Link
	attachments []Attachment
	dumpIter    *link.Iter
	closedRd    *ringbuf.Reader
	stop        chan struct{}
	loops       sync.WaitGroup // drainLoop and sweepLoop

	// snapMu is held by a read, and by its snapshot until released: the
	// snapshot's connections are known's entries and the UDP reader's
	// buffer, which only a read writes. Taken before mu.
	snapMu    sync.Mutex
	snapConns []*ConnectionStats // the last snapshot's array, for reuse
	mu        sync.Mutex         // serialises reads of the kernel state
	known     *known
	decode    atomic.Uint64 // records that could not be decoded
	errnos    errnoCounts   // the kernel's errors on closed sockets
	// listenMu serialises Listeners (its process names, listenComms).
	listenMu     sync.Mutex
	listenComms  comms
	listenErrors atomic.Uint64 // namespaces whose listeners were not read
	listenDrops  listenDrops
	// Kept from one read to the next (under mu): the process names.
	comms comms
	udp   udpReader
	// userFilter: the filters could not go into the kernel; apply them here.
	userFilter bool
	ct         *conntracker // nil without EnableConntrack
	dns        *dns.Cache   // nil without DNSInspection
	ports      *PortMapping
	support    []Capability
	stats      io.Closer // the kernel's BPF run statistics, while on
	dnsRd      *ringbuf.Reader
	// The cgroups' names and filter (cgroups.go); nil without them.
	cgroups       *cgroup.Resolver
	cgroupRootDir string // the hierarchy's root, as mounted here
	cgroupRd      *ringbuf.Reader
	cgroupPaths   map[string]uint8 // the filter's paths: cgroupInclude or cgroupExclude
	// cgroupFilterIDs is what the kernel's filter table holds (id: value).
	cgroupFilterIDs map[uint64]uint8
	cgroupLost      uint64 // lost_cgroup_events when last walked for them
	// cgroupFilterLost: lost_cgroup_events when the filter was last
	// synced for them.
	cgroupFilterLost uint64
	// A walk for lost events runs in the background (cgroupWalking); at
	// its end cgroupWalkedFor holds the lost_cgroup_events it was for.
	cgroupWalking   atomic.Bool
	cgroupWalkedFor atomic.Uint64
	// A drain's events, kept for reuse (under drainMu).
	cgroupMade    []cgroup.CreatedEvent
	cgroupRemoved []uint64
	udpHook       string                   // UDPHookTracepoint, UDPHookFentry, UDPHookKprobe or "" (no UDP)
	tcpIter       string                   // TCPIteratorTaskFile or TCPIteratorTCP, with TCP
	netnsWarned   bool                     // said that some namespaces cannot be entered
	draining      bool                     // drainLoop runs: Close stops it and waits
	recvParams    int                      // udp_recvmsg's arguments: 6 before Linux 5.19, then 5, 4 in newer kernels (6.18, 7.2)
	intraEnds     map[endpointKey]struct{} // markIntraHostWith's, kept across scrapes (under mu)
	jiffyMicros   uint64                   // µs per jiffy (1e6 / CONFIG_HZ), 0 when unknown
	synSeed       uint32                   // the SYN table's hash key (syn_seed)
	// portMu guards ports: the ages and retired counts of the ports'
	// resets without a connection (PortResets).
	portMu     sync.Mutex
	resetPorts portAges
}

// JiffyMicros is the µs in a jiffy, the unit of Detail's times, as
// TCP_INFO converts them (1,000,000 / CONFIG_HZ, rounded down); 0 when
// the kernel's tick rate could not be found (they are then not exported).
func (t *Tracer) JiffyMicros() uint64 { return t.jiffyMicros }

// New checks the prerequisites, loads and attaches the programs, seeds the
// connections that already exist and starts reading closed connections.
func New(cfg *Config, logger log.Logger) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cgroupPath, err := checkPrerequisites(cfg)
	if err != nil {
		return nil, err
	}
	// Before Linux 5.11 BPF maps are charged to RLIMIT_MEMLOCK, whose
	// default (64 KiB) fits none of ours; later kernels charge the cgroup
	// and this does nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("lifting the memory-lock limit (RLIMIT_MEMLOCK) that BPF maps count against before Linux 5.11: %w", err)
	}
	for _, c := range optionalCapabilities() {
		level.Warn(logger).Log("msg", "capability missing", "capability", c)
	}
	support := kernelSupport()
	cfg = cfg.clone() // what this kernel cannot do is switched off in the tracer's copy, not in the caller's
	t := &Tracer{
		cfg:        cfg,
		logger:     logger,
		known:      newKnown(2 * int(cfg.MaxTrackedConnections)),
		support:    support,
		stop:       make(chan struct{}),
		comms:      make(comms),
		drainComms: make(comms),
	}
	for _, c := range support {
		switch {
		case c.Required && !c.Available:
			return nil, fmt.Errorf("this kernel lacks %s (%s): the tracer needs it for %s", c.Name, c.Reason, c.Costs)
		case !c.Available:
			level.Info(logger).Log("msg", "kernel capability missing", "capability", c.Name, "costs", c.Costs, "reason", c.Reason)
		}
	}
	if cfg.CollectTCPConns {
		it, missing, err := chooseTCPIterator(cfg.TCPIterator, support)
		switch {
		case err != nil:
			return nil, err
		case it == "":
			level.Warn(logger).Log("msg", "TCP is not traced", "why", "the kernel lacks "+strings.Join(missing, "; "))
			cfg.CollectTCPConns = false
		case cfg.TCPIterator != TCPIteratorAuto:
			level.Info(logger).Log("msg", "TCP iterator chosen", "iterator", it, "why", "asked for (--tracer.tcp-iterator="+it+")")
		case it == TCPIteratorTCP:
			level.Info(logger).Log("msg", "TCP iterator chosen", "iterator", it, "why", "the verifier refuses the task_file iterator: "+strings.Join(lacking(support, "task_file_sock_storage"), "; "))
		default:
			level.Info(logger).Log("msg", "TCP iterator chosen", "iterator", it, "why", "the task_file iterator: every process's sockets in one pass (--tracer.tcp-iterator=tcp reads each network namespace's instead)")
		}
		t.tcpIter = it
	}
	if cfg.CollectTCPConns {
		if hz, how, err := kernelHZ(); err != nil {
			level.Warn(logger).Log("msg", "the kernel's tick rate is unknown: what limited sending (conntrace_send_*_seconds_total) is not exported", "err", err)
		} else {
			t.jiffyMicros = 1_000_000 / uint64(hz) // as TCP_INFO converts
			level.Info(logger).Log("msg", "kernel tick rate", "hz", hz, "from", how)
		}
	}
	if cfg.CollectUDPConns {
		hook, why, err := chooseUDPHook(cfg.UDPHook, support, "")
		switch {
		case err != nil:
			return nil, err
		case hook == "":
			level.Warn(logger).Log("msg", "UDP is not traced", "why", why)
			cfg.CollectUDPConns = false
		default:
			level.Info(logger).Log("msg", "UDP bytes hook chosen", "hook", hook, "why", why)
			t.udpHook = hook
		}
	}
	if !cfg.CollectTCPConns && !cfg.CollectUDPConns {
		return nil, errors.New("nothing to trace: TCP and UDP are both off (switched off, or not possible on this kernel: see above)")
	}
	if cfg.EnableConntrack {
		if t.ct, err = newConntracker(cfg); err != nil {
			return nil, err
		}
	}
	if cfg.BPFStats {
		// Costs every BPF program on the host two clock reads per run,
		// while the exporter runs (BENCHMARKS.md).
		if t.stats, err = ebpf.EnableStats(unix.BPF_STATS_RUN_TIME); err != nil {
			return nil, fmt.Errorf("turning on the kernel's BPF statistics (--tracer.bpf-stats): %w", err)
		}
	}
	if err := t.load(); err != nil {
		if t.stats != nil {
			t.stats.Close()
		}
		return nil, err
	}
	if err := t.startCgroups(cgroupPath); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.attach(cgroupPath); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.catchUpCgroups(); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.seed(); err != nil {
		t.Close()
		return nil, err
	}
	if _, err := readKprobeProfile(cfg.KprobeProfile); err != nil {
		level.Info(logger).Log("msg", "no kprobe statistics: conntrace_probe_hits and _misses are not exported", "err", err)
	}
	t.ports = NewPortMapping(cfg.ProcRoot)
	if err := t.ports.readInitialState(); err != nil {
		level.Warn(logger).Log("msg", "reading the listening ports from /proc (kept current from the kernel from now on)", "err", err)
	}
	t.closedRd, err = ringbuf.NewReader(t.objs.ClosedConns)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("opening the closed-connection ring buffer: %w", err)
	}
	if cfg.DNSInspection {
		t.dns = dns.NewCache(cfg.DNSCacheSize, cfg.DNSCacheBytes, cfg.DNSCacheTTL)
		if t.dnsRd, err = ringbuf.NewReader(t.objs.DnsEvents); err != nil {
			t.Close()
			return nil, fmt.Errorf("opening the DNS ring buffer: %w", err)
		}
	}
	t.draining = true // Close waits for the loops only once they run
	t.loops.Add(2)
	go t.drainLoop()
	go t.sweepLoop()
	return t, nil
}

// DebugNetworkMaps returns the connections in the kernel now, without any
// client state (the seed's debug view).
func (t *Tracer) DebugNetworkMaps() (*Connections, error) {
	t.snapMu.Lock()
	defer t.snapMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	conns, err := t.readAll(now)
	if err != nil {
		return nil, err
	}
	t.translate(conns, now)
	out := &Connections{Conns: make([]ConnectionStats, len(conns))}
	for i, c := range conns {
		out.Conns[i] = *c
	}
	t.dropReadRefs()
	return out, nil
}

// Attachments lists the attached programs.
func (t *Tracer) Attachments() []Attachment { return t.attachments }

// Close detaches every program and frees every map. Links are bpf_links, so
// nothing stays attached even if the process dies; nothing is pinned.
func (t *Tracer) Close() error {
	var errs []error
	if t.draining {
		close(t.stop)
		t.loops.Wait()
	}
	if t.closedRd != nil {
		errs = append(errs, t.closedRd.Close())
	}
	if t.dnsRd != nil {
		errs = append(errs, t.dnsRd.Close())
	}
	if t.cgroupRd != nil {
		errs = append(errs, t.cgroupRd.Close())
	}
	if t.stats != nil {
		errs = append(errs, t.stats.Close())
		t.stats = nil
	}
	for i := len(t.links) - 1; i >= 0; i-- {
		errs = append(errs, t.links[i].Close())
	}
	t.links = nil
	errs = append(errs, t.objs.Close())
	if t.ct != nil {
		t.ct.close()
	}
	return errors.Join(errs...)
}

// keep says whether a connection is reported: DNS to a loopback resolver
// only with CollectLocalDNS, and the filters when they are applied in user
// space (otherwise the kernel never tracked a filtered one).
func (t *Tracer) keep(c *ConnectionStats) bool {
	if !t.cfg.CollectLocalDNS && (c.DPort == 53 || c.SPort == 53) && c.Dest.IsLoopback() {
		return false // DNS to a local resolver, as the seed: CollectLocalDNS
	}
	return !t.userFilter || t.cfg.Filters.Traced(c.filterConn())
}
