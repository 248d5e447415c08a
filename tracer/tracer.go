package tracer

import (
	"bytes"

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
	"github.com/conntrace/conntrace_exporter/dns"
)

// Attachment describes one attached BPF program, for the start-up log and
// conntrace_bpf_program_info.
type Attachment struct {
	Program string // program name in the object
	Hook    string // e.g. "sock/inet_sock_set_state", "cgroup /sys/fs/cgroup/unified"
	Attach  string // e.g. "tp_btf", "sockops", "iter"
}

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
	natMu    sync.Mutex
	natWait  []bpf.ConntraceConnRecord // the records, clamped by known (see wait)
	natSpare []bpf.ConntraceConnRecord // natWait's previous array, for reuse
	natFull  uint64                    // given without their NAT: natWait was full
	// ctMu guards ct; a drain only tries it (a dump holds it long).
	ctMu sync.Mutex

	objs        bpf.ConntraceObjects
	links       []link.Link
	attachments []Attachment
	dumpIter    *link.Iter
	closedRd    *ringbuf.Reader
	stop        chan struct{}
	loops       sync.WaitGroup // drainLoop and sweepLoop

	mu     sync.Mutex // serialises reads of the kernel state
	known  *known
	decode atomic.Uint64 // records that could not be decoded
	// Reused from one read to the next (under mu).
	buf   bytes.Buffer
	recs  []bpf.ConntraceConnRecord
	comms comms
	udp   udpReader
	// userFilter: the filters could not go into the kernel; apply them here.
	userFilter  bool
	ct          *conntracker // nil without EnableConntrack
	dns         *dns.Cache   // nil without DNSInspection
	ports       *PortMapping
	support     []Capability
	stats       io.Closer // the kernel's BPF run statistics, while on
	dnsRd       *ringbuf.Reader
	udpHook     string                   // UDPHookTracepoint, UDPHookFentry, UDPHookKprobe or "" (no UDP)
	tcpIter     string                   // tcpIterTaskFile or tcpIterTCP, with TCP
	netnsWarned bool                     // said that some namespaces cannot be entered
	draining    bool                     // drainLoop runs: Close stops it and waits
	recvParams  int                      // udp_recvmsg's arguments: 6 before Linux 5.19, then 5, 4 in newer kernels (6.18, 7.2)
	udpFailed   []string                 // UDP hooks auto chose that did not load
	intraEnds   map[endpointKey]struct{} // markIntraHostWith's, kept across scrapes (under mu)
}

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
	if need := cfg.StateNeeded(); cfg.MaxConnectionsStateBuffered < need {
		level.Warn(logger).Log("msg", "per-client baselines below what the kernel can track: a busy host fills them, and connections past them are reported late or lose traffic (lost_total{reason=\"client_state_full\"})",
			"max_connections_state_buffered", cfg.MaxConnectionsStateBuffered, "needed", need)
	}
	support := KernelSupport()
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
		it, missing := chooseTCPIterator(support)
		switch it {
		case "":
			level.Warn(logger).Log("msg", "TCP is not traced", "why", "the kernel lacks "+strings.Join(missing, "; "))
			cfg.CollectTCPConns = false
		case tcpIterTCP:
			level.Info(logger).Log("msg", "TCP sockets found through iter/tcp, opened in each network namespace", "why", "the verifier refuses the task_file iterator: "+strings.Join(lacking(support, "task_file_sock_storage"), "; "))
		}
		t.tcpIter = it
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
	if err := t.attach(cgroupPath); err != nil {
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
	if err := t.ports.ReadInitialState(); err != nil {
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

func (t *Tracer) load() error {
	spec, err := bpf.LoadConntrace()
	if err != nil {
		return fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	if err := spec.Variables["udp_idle_ns"].Set(uint64(t.cfg.UDPConnTimeout.Nanoseconds())); err != nil {
		return fmt.Errorf("setting udp_idle_ns: %w", err)
	}
	if err := spec.Variables["max_tracked"].Set(t.cfg.MaxTrackedConnections); err != nil {
		return fmt.Errorf("setting max_tracked: %w", err)
	}
	version, err := CurrentKernelVersion()
	if err != nil {
		return err
	}
	for name, on := range map[string]bool{
		"collect_ipv6": t.cfg.CollectIPv6Conns,
		"collect_udp":  t.cfg.CollectUDPConns,
		"dns_on":       t.cfg.DNSInspection,
		// What the RTT callback passes (see conntrace.c): known from
		// the version only.
		"rtt_sample_arg": version >= kernelRTTSampleArg,
	} {
		flag := uint8(0) // the BPF side reads a __u8
		if on {
			flag = 1
		}
		if err := spec.Variables[name].Set(flag); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	if t.readsUDPCookies() {
		arg, params, err := recvmsgFlagsArg()
		if err != nil {
			return fmt.Errorf("the UDP %s programs need udp_recvmsg's arguments: %w", t.udpHook, err)
		}
		t.recvParams = params
		if err := spec.Variables["recvmsg_flags_arg"].Set(arg); err != nil {
			return fmt.Errorf("setting recvmsg_flags_arg: %w", err)
		}
	}
	for _, name := range t.unusedPrograms() {
		delete(spec.Programs, name)
	}
	spec.Maps["closed_conns"].MaxEntries = t.cfg.ClosedRingBufferBytes
	spec.Maps["udp_flows"].MaxEntries = t.cfg.MaxTrackedConnections
	tables, err := t.kernelFilters(spec)
	if err != nil {
		return err
	}
	opts := &ebpf.CollectionOptions{}
	if t.cfg.BPFDebug {
		opts.Programs.LogLevel = ebpf.LogLevelInstruction
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, *opts)
	if err != nil && t.udpHook != UDPHookTracepoint && t.udpHook != "" && t.cfg.UDPHook == UDPHookAuto {
		// A fallback was chosen, not asked for: the next one, or
		// without UDP; the tracer still runs.
		hook, why, _ := chooseUDPHook(UDPHookAuto, t.support, t.udpHook)
		level.Warn(t.logger).Log("msg", "the UDP "+t.udpHook+" programs did not load", "err", err, "next", hook, "why", why)
		t.udpHook = hook
		if hook == "" {
			t.cfg.CollectUDPConns = false
			if !t.cfg.CollectTCPConns {
				return fmt.Errorf("nothing to trace: TCP is not possible on this kernel, and the UDP programs did not load: %w", err)
			}
		}
		return t.load()
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("the kernel's verifier refused a BPF program: %+v", ve)
		}
		return fmt.Errorf("loading the BPF programs and maps: %w", err)
	}
	err = assignLoaded(coll, &t.objs)
	coll.Close() // closes only what was not handed over
	if err != nil {
		t.objs.Close()
		return fmt.Errorf("taking the loaded BPF objects: %w", err)
	}
	if err := t.fillFilters(tables); err != nil {
		t.objs.Close()
		return err
	}
	return nil
}

// attached keeps l, to close with the tracer, and says what it attached.
func (t *Tracer) attached(l link.Link, a Attachment) {
	t.links = append(t.links, l)
	t.attachments = append(t.attachments, a)
}

func (t *Tracer) attach(cgroupPath string) error {
	tps := []struct {
		prog *ebpf.Program
		name string
		hook string
	}{
		{t.objs.HandleSetState, "handle_set_state", "sock/inet_sock_set_state"},
		{t.objs.HandleDestroySock, "handle_destroy_sock", "tcp/tcp_destroy_sock"},
	}
	for _, tp := range tps {
		if tp.prog == nil {
			continue // not loaded: no TCP, or no tcp_destroy_sock (a safety net only)
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: tp.prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return fmt.Errorf("attaching %s to the BTF tracepoint %s: %w", tp.name, tp.hook, err)
		}
		t.attached(l, Attachment{Program: tp.name, Hook: tp.hook, Attach: "tp_btf"})
	}
	if t.cfg.CollectTCPConns {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: ebpf.AttachCGroupSockOps, Program: t.objs.HandleSockops})
		if err != nil {
			return fmt.Errorf("attaching handle_sockops to the cgroup v2 root %s: %w", cgroupPath, err)
		}
		t.attached(l, Attachment{Program: "handle_sockops", Hook: "cgroup " + cgroupPath, Attach: "sockops"})
	}

	if t.cfg.CollectUDPConns {
		if err := t.attachUDP(cgroupPath); err != nil {
			return err
		}
	}

	if t.cfg.DNSInspection {
		// Egress first: an answer is read only for a query seen leaving.
		if err := t.attachCgroup(cgroupPath, "cgroup_skb", []cgroupHook{
			{t.objs.DnsEgress, "dns_egress", ebpf.AttachCGroupInetEgress, "egress"},
			{t.objs.DnsIngress, "dns_ingress", ebpf.AttachCGroupInetIngress, "ingress"},
		}); err != nil {
			return err
		}
	}

	if !t.cfg.CollectTCPConns {
		return nil
	}
	prog, name, hook := t.objs.DumpConns, "dump_conns", "task_file (each scrape)"
	if t.tcpIter == tcpIterTCP {
		prog, name, hook = t.objs.DumpConnsTcp, "dump_conns_tcp", "tcp, in each network namespace (each scrape)"
	}
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attaching the iterator %s: %w", name, err)
	}
	t.dumpIter = it
	t.attached(it, Attachment{Program: name, Hook: hook, Attach: "iter"})
	return nil
}

// seed finds the connections that existed before start-up: a first pass over
// every process's files records listeners, a second one tracks connections.
// The tracepoints are already attached, so nothing opened meanwhile is missed.
func (t *Tracer) seed() error {
	passes := []struct {
		prog       *ebpf.Program
		name, hook string
		eachNetns  bool
	}{
		{t.objs.SeedListeners, "seed_listeners", "task_file (once, at start-up)", false},
		{t.objs.SeedConns, "seed_conns", "task_file (once, at start-up)", false},
		{t.objs.SeedOwners, "seed_owners", "task_file (once, at start-up)", false},
		{t.objs.SeedConnsTcp, "seed_conns_tcp", "tcp, in each network namespace (once, at start-up)", true},
	}
	for _, p := range passes {
		if p.prog == nil {
			continue // not this kernel's way, or no TCP
		}
		it, err := link.AttachIter(link.IterOptions{Program: p.prog})
		if err != nil {
			return fmt.Errorf("attaching the iterator %s: %w", p.name, err)
		}
		var buf bytes.Buffer
		if p.eachNetns {
			err = t.readEachNetns(it, &buf)
		} else {
			err = readIter(it, &buf)
		}
		it.Close()
		if err != nil {
			return fmt.Errorf("running the iterator %s: %w", p.name, err)
		}
		t.attachments = append(t.attachments, Attachment{Program: p.name, Hook: p.hook, Attach: "iter"})
	}
	return nil
}

// readEachNetns reads it in every network namespace (iter/tcp), and says
// once when some cannot be entered: their connections are then reported
// from their close records only.
func (t *Tracer) readEachNetns(it *link.Iter, buf *bytes.Buffer) error {
	refused, why, err := readIterInEachNetns(it, t.cfg.ProcRoot, buf)
	if refused > 0 && !t.netnsWarned {
		t.netnsWarned = true
		level.Warn(t.logger).Log("msg", "some network namespaces cannot be entered (setns needs CAP_SYS_ADMIN): their TCP connections are counted from their close records only, not live", "namespaces", refused, "err", why)
	}
	return err
}

// DebugNetworkMaps returns the connections in the kernel now, without any
// client state (the seed's debug view).
func (t *Tracer) DebugNetworkMaps() (*Connections, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	conns, err := t.readAll(now)
	if err != nil {
		return nil, err
	}
	t.translate(conns, now)
	return &Connections{Conns: conns}, nil
}

// Stats returns the tracer's health.
func (t *Tracer) Stats() Stats {
	s := Stats{
		TrackedConnectionsLimit: uint64(t.cfg.MaxTrackedConnections),
		Lost:                    make(map[string]uint64, len(LostReasons)),
	}
	var v uint64
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
	s.Lost[LostDecodeError] = t.decode.Load()
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
	s.Programs = t.ProgramStats()
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

// cgroupHook is a program to attach to the cgroup v2 root.
type cgroupHook struct {
	prog   *ebpf.Program
	name   string
	attach ebpf.AttachType
	hook   string // as said in Attachment.Hook
}

// attachCgroup attaches hooks to cgroupPath, as programs of kind.
func (t *Tracer) attachCgroup(cgroupPath, kind string, hooks []cgroupHook) error {
	for _, h := range hooks {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: h.attach, Program: h.prog})
		if err != nil {
			return fmt.Errorf("attaching %s to the cgroup v2 root %s (%s %s): %w", h.name, cgroupPath, kind, h.hook, err)
		}
		t.attached(l, Attachment{Program: h.name, Hook: "cgroup " + cgroupPath + " " + h.hook, Attach: kind})
	}
	return nil
}

// ktimeNow is the kernel's bpf_ktime_get_ns clock (CLOCK_MONOTONIC) now.
func ktimeNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("CLOCK_MONOTONIC: %v", err)) // cannot fail on Linux
	}
	return uint64(ts.Nano())
}

// keep says whether a connection is reported: DNS to a loopback resolver
// only with CollectLocalDNS, and the filters when they are applied in user
// space (otherwise the kernel never tracked a filtered one).
func (t *Tracer) keep(c *ConnectionStats) bool {
	if !t.cfg.CollectLocalDNS && (c.DPort == 53 || c.SPort == 53) && c.Dest.IsLoopback() {
		return false // DNS to a local resolver, as the seed: CollectLocalDNS
	}
	return !t.userFilter || t.cfg.Filters.Traced(c)
}

// syncPorts keeps the port mapping current: the TCP listeners the kernel
// programs track, and the ports of UDP flows of bound sockets. Callers hold
// t.mu.
func (t *Tracer) syncPorts(conns []ConnectionStats) {
	if t.ports == nil {
		return
	}
	listeners := map[PortKey]struct{}{}
	var k bpf.ConntraceListenerKey
	var v bpf.ConntraceListener
	it := t.objs.Listeners.Iterate()
	for it.Next(&k, &v) {
		listeners[PortKey{NetNS: k.Netns, Port: k.Port, Type: TCP}] = struct{}{}
	}
	t.ports.syncKernel(listeners)
	for i := range conns {
		if c := &conns[i]; c.Type == UDP && c.ServerSide {
			t.ports.AddMapping(PortKey{NetNS: c.NetNS, Port: c.SPort, Type: UDP})
		}
	}
}

// PortMapping returns the listening ports of every network namespace.
func (t *Tracer) PortMapping() *PortMapping { return t.ports }
