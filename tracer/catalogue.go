package tracer

import (
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

// Attach kinds (Attachment.Attach, the attach column of
// conntrace_bpf_program_info).
const (
	kindTracepoint = "tp_btf"
	kindFexit      = "fexit"
	kindKprobe     = "kprobe"
	kindKretprobe  = "kretprobe"
	kindSockops    = "sockops"
	kindSockAddr   = "cgroup_sock_addr"
	kindSock       = "cgroup_sock"
	kindSkb        = "cgroup_skb"
	kindIter       = "iter"
)

// Features of the catalogue: what a program serves.
const (
	featureTCP = "tcp"
	featureUDP = "udp"
	featureDNS = "dns"
	// featureCgroup: naming and filtering the cgroups of connections.
	featureCgroup = "cgroup"
)

// program is one BPF program of bpf/conntrace.c: how it attaches, when this
// configuration and kernel want it, and what the kernel must offer for the
// verifier to accept it.
type program struct {
	name    string // in the object (bpf2go's ebpf tag)
	feature string // featureTCP, featureUDP or featureDNS
	kind    string // kind* above
	// hook is what it attaches to: the tracepoint, the kernel function,
	// the cgroup hook's label or the iterator's description.
	hook string
	// cgroup is the attach type of the cgroup kinds.
	cgroup ebpf.AttachType
	// needs are the capabilities (kernelSupport) the verifier wants for
	// it: a kernel without one refuses it, and it is not loaded there.
	needs []string
	// wanted says whether this configuration and kernel's choices (the
	// TCP iterator, the UDP hook) use it. A wanted program is loaded and
	// attached, and a kernel without its needs fails start-up naming it
	// (a choice the kernel cannot carry must not trace less in silence),
	// unless it is optional.
	wanted func(*Tracer) bool
	// optional, for a program the kernel may lack (a tracepoint of newer
	// kernels, IPv6 functions when IPv6 is a module not loaded), is what
	// is lost without it: start-up says so and goes on.
	optional string
	// recvParams, for an fexit program on udp_recvmsg, is the number of
	// arguments of the signature it is for (6 before Linux 5.19, then 5;
	// 4 in newer kernels: 6.18, 7.2); 0 for others.
	recvParams int
	// once: an iterator run once at start-up (to seed what existed
	// before), after every other program is attached; else, an
	// iterator read at each scrape (at most one is wanted).
	once bool
	// eachNetns: an iter/tcp iterator, read in every network namespace.
	eachNetns bool
}

// What TCP tracing needs beyond what start-up requires, and each
// iterator's own need.
var (
	tcpNeeds      = []string{"sk_storage_tracing", "bpf_sock_from_file", "atomic_fetch"}
	taskFileNeeds = slices.Concat(tcpNeeds, []string{"task_file_sock_storage"})
	iterTCPNeeds  = slices.Concat(tcpNeeds, []string{"iter_tcp_sock_storage"})
)

// catalogue is every program of the object, in the order they attach:
// the tracepoints first, the seeding iterators last, so that nothing
// opened while seeding is missed. Adding a program to bpf/conntrace.c is
// adding its row here (TestCatalogueIsTheObject checks both agree).
var catalogue = []program{
	{name: "handle_set_state", feature: featureTCP, kind: kindTracepoint, hook: "sock/inet_sock_set_state", needs: tcpNeeds, wanted: (*Tracer).tracesTCP},
	{name: "handle_destroy_sock", feature: featureTCP, kind: kindTracepoint, hook: "tcp/tcp_destroy_sock", needs: slices.Concat(tcpNeeds, []string{"tracepoint:tcp/tcp_destroy_sock"}), wanted: (*Tracer).tracesTCP,
		optional: "nothing: a safety net only, every close goes through inet_sock_set_state"},
	{name: "handle_cong_state", feature: featureTCP, kind: kindTracepoint, hook: "tcp/tcp_cong_state_set", needs: slices.Concat(tcpNeeds, []string{"tracepoint:tcp/tcp_cong_state_set"}), wanted: (*Tracer).tracesTCP,
		optional: "conntrace_fast_recoveries_total"},
	{name: "handle_send_reset", feature: featureTCP, kind: kindTracepoint, hook: "tcp/tcp_send_reset", needs: slices.Concat(tcpNeeds, []string{"tracepoint:tcp/tcp_send_reset"}), wanted: (*Tracer).tracesTCP,
		optional: "conntrace_resets_sent_total"},
	{name: "handle_receive_reset", feature: featureTCP, kind: kindTracepoint, hook: "tcp/tcp_receive_reset", needs: slices.Concat(tcpNeeds, []string{"tracepoint:tcp/tcp_receive_reset"}), wanted: (*Tracer).tracesTCP,
		optional: "conntrace_resets_received_total"},
	// Resets no connection took, per port: the tracepoint fires for them
	// since Linux 6.10 (with the reset's reason), and the segment's port
	// is read through bpf_rdonly_cast (6.2+).
	{name: "handle_reset_no_conn", feature: featureTCP, kind: kindTracepoint, hook: "tcp/tcp_send_reset", needs: []string{"tracepoint:tcp/tcp_send_reset", "tcp_send_reset_no_socket"}, wanted: (*Tracer).tracesTCP,
		optional: "conntrace_resets_no_connection_total"},
	// It counts in the listeners map, no socket storage: it loads where
	// the rest of TCP cannot (5.10), wanted only with it.
	{name: "handle_synack_retrans", feature: featureTCP, kind: kindTracepoint, hook: "tcp/tcp_retransmit_synack", needs: []string{"tracepoint:tcp/tcp_retransmit_synack"}, wanted: (*Tracer).tracesTCP,
		optional: "conntrace_listen_synack_retransmits_total"},
	{name: "handle_sockops", feature: featureTCP, kind: kindSockops, cgroup: ebpf.AttachCGroupSockOps, wanted: (*Tracer).tracesTCP},

	// The cgroup hooks that see the peer of sendto()/recvfrom(), for
	// every UDP hook.
	{name: "udp_sendmsg4", feature: featureUDP, kind: kindSockAddr, hook: "sendmsg4", cgroup: ebpf.AttachCGroupUDP4Sendmsg, wanted: (*Tracer).tracesUDP},
	{name: "udp_sendmsg6", feature: featureUDP, kind: kindSockAddr, hook: "sendmsg6", cgroup: ebpf.AttachCGroupUDP6Sendmsg, wanted: (*Tracer).tracesUDP},
	{name: "udp_recvmsg4", feature: featureUDP, kind: kindSockAddr, hook: "recvmsg4", cgroup: ebpf.AttachCGroupUDP4Recvmsg, wanted: (*Tracer).tracesUDP},
	{name: "udp_recvmsg6", feature: featureUDP, kind: kindSockAddr, hook: "recvmsg6", cgroup: ebpf.AttachCGroupUDP6Recvmsg, wanted: (*Tracer).tracesUDP},
	// Makes the cookie of new UDP sockets, which the kprobes and the fexit
	// programs read but cannot make; before them.
	{name: "udp_sock_cookie", feature: featureUDP, kind: kindSock, hook: "sock_create", cgroup: ebpf.AttachCGroupInetSockCreate, wanted: (*Tracer).readsUDPCookies},

	// The UDP byte counts: one of three ways (Config.UDPHook).
	{name: "handle_send_length", feature: featureUDP, kind: kindTracepoint, hook: "sock/sock_send_length", needs: []string{"tracepoint:sock/sock_send_length"}, wanted: udpHookIs(UDPHookTracepoint)},
	{name: "handle_recv_length", feature: featureUDP, kind: kindTracepoint, hook: "sock/sock_recv_length", needs: []string{"tracepoint:sock/sock_recv_length"}, wanted: udpHookIs(UDPHookTracepoint)},
	fexit("fexit_udp_sendmsg", "udp_sendmsg", 0),
	fexit("fexit_udpv6_sendmsg", "udpv6_sendmsg", 0),
	fexit("fexit_udp_recvmsg", "udp_recvmsg", 5),
	fexit("fexit_udpv6_recvmsg", "udpv6_recvmsg", 5),
	fexit("fexit_udp_recvmsg_noblock", "udp_recvmsg", 6),
	fexit("fexit_udpv6_recvmsg_noblock", "udpv6_recvmsg", 6),
	fexit("fexit_udp_recvmsg_noaddrlen", "udp_recvmsg", 4),
	fexit("fexit_udpv6_recvmsg_noaddrlen", "udpv6_recvmsg", 4),
	kprobe("kprobe_udp_sendmsg", kindKprobe, "udp_sendmsg"),
	kprobe("kretprobe_udp_sendmsg", kindKretprobe, "udp_sendmsg"),
	kprobe("kprobe_udp_recvmsg", kindKprobe, "udp_recvmsg"),
	kprobe("kretprobe_udp_recvmsg", kindKretprobe, "udp_recvmsg"),
	kprobe("kprobe_udpv6_sendmsg", kindKprobe, "udpv6_sendmsg"),
	kprobe("kretprobe_udpv6_sendmsg", kindKretprobe, "udpv6_sendmsg"),
	kprobe("kprobe_udpv6_recvmsg", kindKprobe, "udpv6_recvmsg"),
	kprobe("kretprobe_udpv6_recvmsg", kindKretprobe, "udpv6_recvmsg"),

	// The cgroups made and removed, for their names and the filter.
	{name: "handle_cgroup_mkdir", feature: featureCgroup, kind: kindTracepoint, hook: "cgroup/cgroup_mkdir", needs: []string{"tracepoint:cgroup/cgroup_mkdir"}, wanted: (*Tracer).cgroupsWanted},
	{name: "handle_cgroup_rmdir", feature: featureCgroup, kind: kindTracepoint, hook: "cgroup/cgroup_rmdir", needs: []string{"tracepoint:cgroup/cgroup_rmdir"}, wanted: (*Tracer).cgroupsWanted},

	// Egress first: an answer is read only for a query seen leaving.
	{name: "dns_egress", feature: featureDNS, kind: kindSkb, hook: "egress", cgroup: ebpf.AttachCGroupInetEgress, wanted: (*Tracer).inspectsDNS},
	{name: "dns_ingress", feature: featureDNS, kind: kindSkb, hook: "ingress", cgroup: ebpf.AttachCGroupInetIngress, wanted: (*Tracer).inspectsDNS},

	// The iterators of the two ways of finding TCP sockets (Tracer.tcpIter):
	// the one read at each scrape, then the seeding passes, in order (the
	// listeners before the connections).
	{name: "dump_conns", feature: featureTCP, kind: kindIter, hook: "task_file (each scrape)", needs: taskFileNeeds, wanted: tcpIterIs(TCPIteratorTaskFile)},
	{name: "dump_conns_tcp", feature: featureTCP, kind: kindIter, hook: "tcp, in each network namespace (each scrape)", needs: iterTCPNeeds, wanted: tcpIterIs(TCPIteratorTCP), eachNetns: true},
	// Also for UDP alone: it makes the cookies of the UDP sockets that
	// existed before start-up for the kprobes and fexit.
	{name: "seed_listeners", feature: featureTCP, kind: kindIter, hook: "task_file (once, at start-up)", needs: taskFileNeeds, once: true,
		wanted: func(t *Tracer) bool { return t.tcpIter == TCPIteratorTaskFile || t.seedsUDPCookies() }},
	{name: "seed_conns", feature: featureTCP, kind: kindIter, hook: "task_file (once, at start-up)", needs: taskFileNeeds, once: true, wanted: tcpIterIs(TCPIteratorTaskFile)},
	{name: "seed_owners", feature: featureTCP, kind: kindIter, hook: "task_file (once, at start-up)", needs: iterTCPNeeds, once: true, wanted: tcpIterIs(TCPIteratorTCP)},
	// Also with task_file: the sockets no file points to (see seedsUnheld).
	{name: "seed_conns_tcp", feature: featureTCP, kind: kindIter, hook: "tcp, in each network namespace (once, at start-up)", needs: iterTCPNeeds, once: true, eachNetns: true,
		wanted: func(t *Tracer) bool { return t.tcpIter == TCPIteratorTCP || t.seedsUnheld() }},
}

// fexit is the row of an fexit program on a UDP function; recvParams as in
// program. The IPv6 functions may be missing from the kernel's BTF.
func fexit(name, function string, recvParams int) program {
	return program{name: name, feature: featureUDP, kind: kindFexit, hook: function,
		needs: []string{"fentry", "function:" + function}, optional: ipv6Optional(function),
		recvParams: recvParams,
		wanted: func(t *Tracer) bool {
			return t.udpHook == UDPHookFentry && (recvParams == 0 || recvParams == t.recvParams)
		}}
}

// kprobe is the row of a kprobe or kretprobe on a UDP function. The kernel
// may lack the IPv6 functions; kprobes load everywhere (they fail to
// attach where the kernel has none, naming the program).
func kprobe(name, kind, function string) program {
	return program{name: name, feature: featureUDP, kind: kind, hook: function,
		optional: ipv6Optional(function), wanted: udpHookIs(UDPHookKprobe)}
}

// ipv6Optional is what is lost without an IPv6 UDP function (IPv6 built
// as a module and not loaded), "" for the IPv4 ones: those are needed.
func ipv6Optional(function string) string {
	if strings.HasPrefix(function, "udpv6_") {
		return "IPv6 UDP is not traced"
	}
	return ""
}

func udpHookIs(hook string) func(*Tracer) bool {
	return func(t *Tracer) bool { return t.udpHook == hook }
}

func tcpIterIs(way string) func(*Tracer) bool {
	return func(t *Tracer) bool { return t.tcpIter == way }
}

func (t *Tracer) tracesTCP() bool   { return t.cfg.CollectTCPConns }
func (t *Tracer) tracesUDP() bool   { return t.udpHook != "" }
func (t *Tracer) inspectsDNS() bool { return t.cfg.DNSInspection }

// readsUDPCookies says whether the UDP programs read socket cookies made
// elsewhere (udp_sock_cookie, seed_listeners) instead of making them.
func (t *Tracer) readsUDPCookies() bool {
	return t.udpHook == UDPHookKprobe || t.udpHook == UDPHookFentry
}

// seedsUnheld says whether the task_file way also seeds, through iter/tcp,
// the connections that existed at start-up and that no process holds
// (waiting in an accept queue, orphans draining after close()): no file
// points to them, and no later state change makes the tracer notice them.
func (t *Tracer) seedsUnheld() bool {
	return t.tcpIter == TCPIteratorTaskFile && t.capability("iter_tcp_sock_storage")
}

// seedsUDPCookies says whether seed_listeners runs for UDP alone: with the
// kprobes or fexit it makes the cookies of the UDP sockets that existed
// before start-up, so it stays when TCP is off.
func (t *Tracer) seedsUDPCookies() bool {
	return t.readsUDPCookies() && t.capability("bpf_sock_from_file") && t.capability("task_file_sock_storage")
}

// loads says whether p is loaded and attached: wanted, and, if optional,
// the kernel has what its verifier needs.
func (t *Tracer) loads(p *program) bool {
	return p.wanted(t) && (p.optional == "" || len(lacking(t.support, p.needs...)) == 0)
}
