package tracer

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// Values of Config.UDPHook.
const (
	UDPHookAuto       = "auto"
	UDPHookTracepoint = "tracepoint"
	UDPHookKprobe     = "kprobe"
	UDPHookFentry     = "fentry"
)

// udpHooks are the UDP hooks in the order auto prefers them: the
// tracepoints (a stable interface, one program per call), fexit (one
// program per call, on a kernel function), kprobes (two programs per call
// joined through a map, and a kretprobe's trap: the dearest; BENCHMARKS.md).
var udpHooks = []string{UDPHookTracepoint, UDPHookFentry, UDPHookKprobe}

// The programs of each way of reading UDP: the cgroup hooks (the peer of
// sendto()/recvfrom()) serve all; the byte counts come from the
// tracepoints, the fexit programs or the kprobes, never two of them.
var (
	udpCgroupPrograms     = []string{"udp_sendmsg4", "udp_sendmsg6", "udp_recvmsg4", "udp_recvmsg6"}
	udpTracepointPrograms = []string{"handle_send_length", "handle_recv_length"}
	// udpSockCookie makes the cookie of new UDP sockets, which the kprobes
	// and the fexit programs read but cannot make.
	udpSockCookie = "udp_sock_cookie"
	// udpFentries are the fexit programs; params is the number of
	// arguments of the recvmsg signature a program is for (6 before Linux
	// 5.19, then 5, 4 in newer kernels: 6.18, 7.2), 0 for sendmsg: the loader
	// keeps the recvmsg programs of the kernel's count.
	udpFentries = []struct {
		program, function string
		ipv6              bool
		params            int
	}{
		{"fexit_udp_sendmsg", "udp_sendmsg", false, 0},
		{"fexit_udpv6_sendmsg", "udpv6_sendmsg", true, 0},
		{"fexit_udp_recvmsg", "udp_recvmsg", false, 5},
		{"fexit_udpv6_recvmsg", "udpv6_recvmsg", true, 5},
		{"fexit_udp_recvmsg_noblock", "udp_recvmsg", false, 6},
		{"fexit_udpv6_recvmsg_noblock", "udpv6_recvmsg", true, 6},
		{"fexit_udp_recvmsg_noaddrlen", "udp_recvmsg", false, 4},
		{"fexit_udpv6_recvmsg_noaddrlen", "udpv6_recvmsg", true, 4},
	}
	udpKprobes = []struct {
		program, function string
		ret, ipv6         bool
	}{
		{"kprobe_udp_sendmsg", "udp_sendmsg", false, false},
		{"kretprobe_udp_sendmsg", "udp_sendmsg", true, false},
		{"kprobe_udp_recvmsg", "udp_recvmsg", false, false},
		{"kretprobe_udp_recvmsg", "udp_recvmsg", true, false},
		{"kprobe_udpv6_sendmsg", "udpv6_sendmsg", false, true},
		{"kretprobe_udpv6_sendmsg", "udpv6_sendmsg", true, true},
		{"kprobe_udpv6_recvmsg", "udpv6_recvmsg", false, true},
		{"kretprobe_udpv6_recvmsg", "udpv6_recvmsg", true, true},
	}
)

// tcpPrograms are the programs of TCP tracing: without TCP none is loaded,
// with it all but those of the iterator not chosen (tcpIterators).
var tcpPrograms = []string{"handle_set_state", "handle_destroy_sock", "handle_sockops",
	"seed_listeners", "seed_conns", "dump_conns", "seed_owners", "seed_conns_tcp", "dump_conns_tcp"}

// Ways of finding the sockets for TCP (Tracer.tcpIter): the task_file
// iterator (every process's files, one pass), or iter/tcp opened in each
// network namespace with a task_file pass for the owners (bpf/tcp_iter.h).
const (
	tcpIterTaskFile = "task_file"
	tcpIterTCP      = "tcp"
)

// tcpIterators are the programs of each way.
var tcpIterators = map[string][]string{
	tcpIterTaskFile: {"seed_listeners", "seed_conns", "dump_conns"},
	tcpIterTCP:      {"seed_owners", "seed_conns_tcp", "dump_conns_tcp"},
}

// tcpVersionCapabilities are what TCP tracing needs beyond what start-up
// requires, known from the kernel's version; and one of the iterators.
var tcpVersionCapabilities = []string{"sk_storage_tracing", "bpf_sock_from_file", "atomic_fetch"}

// chooseTCPIterator returns how TCP finds its sockets on a kernel with caps,
// or "" and what is missing.
func chooseTCPIterator(caps []Capability) (string, []string) {
	missing := lacking(caps, tcpVersionCapabilities...)
	if len(missing) > 0 {
		return "", missing
	}
	if len(lacking(caps, "task_file_sock_storage")) == 0 {
		return tcpIterTaskFile, nil
	}
	if len(lacking(caps, "iter_tcp_sock_storage")) == 0 {
		return tcpIterTCP, nil
	}
	return "", lacking(caps, "task_file_sock_storage", "iter_tcp_sock_storage")
}

// TCPPossible says whether this kernel can trace TCP, and if not, why.
func TCPPossible() error {
	if it, missing := chooseTCPIterator(KernelSupport()); it == "" {
		return errors.New("the kernel lacks " + strings.Join(missing, "; "))
	}
	return nil
}

// lacking lists the capabilities of names that caps does not offer, each
// with why (a name caps does not hold is lacking: "not checked").
func lacking(caps []Capability, names ...string) []string {
	var out []string
	for _, name := range names {
		ok, reason := false, "not checked"
		for _, c := range caps {
			if c.Name == name {
				ok, reason = c.Available, c.Reason
			}
		}
		if !ok {
			out = append(out, name+": "+reason)
		}
	}
	return out
}

// readsUDPCookies says whether the UDP programs read socket cookies made
// elsewhere (udp_sock_cookie, seed_listeners) instead of making them.
func (t *Tracer) readsUDPCookies() bool {
	return t.udpHook == UDPHookKprobe || t.udpHook == UDPHookFentry
}

// keepsOtherWays says whether the program name of the TCP way not chosen is
// loaded all the same: seed_listeners for the UDP cookies, seed_conns_tcp
// for the sockets no file points to (see seedsUnheld).
func (t *Tracer) keepsOtherWays(name string) bool {
	switch name {
	case "seed_listeners":
		return t.seedsUDPCookies()
	case "seed_conns_tcp":
		return t.seedsUnheld()
	}
	return false
}

// seedsUnheld says whether the task_file way also seeds, through iter/tcp,
// the connections that existed at start-up and that no process holds
// (waiting in an accept queue, orphans draining after close()): no file
// points to them, and no later state change makes the tracer notice them.
func (t *Tracer) seedsUnheld() bool {
	return t.tcpIter == tcpIterTaskFile && t.capability("iter_tcp_sock_storage")
}

// seedsUDPCookies says whether seed_listeners runs for UDP alone: with the
// kprobes or fexit it makes the cookies of the UDP sockets that existed
// before start-up, so it stays when TCP is off.
func (t *Tracer) seedsUDPCookies() bool {
	return t.readsUDPCookies() && t.capability("bpf_sock_from_file") && t.capability("task_file_sock_storage")
}

// kprobeFunctions are the kernel functions the UDP fallback probes; the
// IPv4 ones are needed, the IPv6 ones (absent when IPv6 is a module that
// is not loaded) only for IPv6.
var kprobeFunctions = []struct {
	name     string
	required bool
}{{"udp_sendmsg", true}, {"udp_recvmsg", true}, {"udpv6_sendmsg", false}, {"udpv6_recvmsg", false}}

// UDPHookPossible says whether this kernel can count UDP bytes with hook
// (UDPHookTracepoint, UDPHookFentry or UDPHookKprobe), and if not, why.
func UDPHookPossible(hook string) error {
	_, _, err := chooseUDPHook(hook, KernelSupport(), "")
	return err
}

// udpHookNeeds are the capabilities each UDP hook needs, and what to say
// when one is forced where they are missing.
var udpHookNeeds = map[string]struct {
	caps    []string
	without string
}{
	UDPHookTracepoint: {[]string{"tracepoint:sock/sock_send_length", "tracepoint:sock/sock_recv_length"}, "this kernel lacks the UDP length tracepoints (Linux 6.3+)"},
	UDPHookFentry:     {[]string{"fentry", "probe_read_kernel", "function:udp_sendmsg", "function:udp_recvmsg"}, "this kernel cannot attach fexit programs to udp_sendmsg/udp_recvmsg"},
	UDPHookKprobe:     {[]string{"kprobes", "probe_read_kernel", "function:udp_sendmsg", "function:udp_recvmsg"}, "this kernel cannot probe udp_sendmsg/udp_recvmsg"},
}

// udpHookWhy is why auto picks each hook, said at start-up.
var udpHookWhy = map[string]string{
	UDPHookTracepoint: "the sock_send_length and sock_recv_length tracepoints: exact, and the cheapest hook",
	UDPHookFentry:     "fexit on udp_sendmsg/udp_recvmsg: the same return values as the tracepoints, one program per call",
	UDPHookKprobe:     "kprobes on udp_sendmsg/udp_recvmsg: the same return values as the tracepoints",
}

// chooseUDPHook decides how UDP bytes are read from what the configuration
// asks and what the kernel offers: a forced hook, or in auto mode the first
// of udpHooks the kernel offers, after failed (a hook auto chose that did
// not load, "" at first). It returns "" when UDP cannot be traced in auto
// mode, and an error naming the setting when a forced choice is
// impossible. why is said at start-up.
func chooseUDPHook(want string, caps []Capability, failed string) (hook, why string, err error) {
	if need, forced := udpHookNeeds[want]; forced {
		if missing := lacking(caps, need.caps...); len(missing) > 0 {
			return "", "", &FieldError{Field: "UDPHook", Value: want, Msg: need.without + ": " + strings.Join(missing, "; ")}
		}
		return want, "asked for (--tracer.udp-hook=" + want + ")", nil
	}
	hooks := udpHooks
	var not []string
	if i := slices.Index(udpHooks, failed); i >= 0 {
		hooks = udpHooks[i+1:]
		not = append(not, failed+" did not load")
	}
	for _, h := range hooks {
		missing := lacking(caps, udpHookNeeds[h].caps...)
		if len(missing) == 0 {
			if len(not) > 0 {
				return h, udpHookWhy[h] + " (not: " + strings.Join(not, "; ") + ")", nil
			}
			return h, udpHookWhy[h], nil
		}
		not = append(not, h+" lacks "+strings.Join(missing, ", "))
	}
	return "", "no UDP hook on this kernel: " + strings.Join(not, "; "), nil
}

// unusedPrograms are the programs of the object this configuration and
// kernel do not attach. They are not loaded: a program for a hook the kernel
// lacks would not pass its verifier.
func (t *Tracer) unusedPrograms() []string {
	var out []string
	if t.udpHook != UDPHookTracepoint {
		out = append(out, udpTracepointPrograms...)
	}
	if t.udpHook != UDPHookKprobe {
		for _, k := range udpKprobes {
			out = append(out, k.program)
		}
	}
	for _, f := range udpFentries {
		if t.udpHook != UDPHookFentry || (f.params != 0 && f.params != t.recvParams) ||
			(f.ipv6 && !t.capability("function:"+f.function)) {
			out = append(out, f.program)
		}
	}
	if !t.readsUDPCookies() {
		out = append(out, udpSockCookie)
	}
	if t.udpHook == "" {
		out = append(out, udpCgroupPrograms...)
	}
	if !t.cfg.DNSInspection {
		out = append(out, "dns_ingress", "dns_egress")
	}
	if !t.capability("tracepoint:tcp/tcp_destroy_sock") {
		out = append(out, "handle_destroy_sock")
	}
	if !t.cfg.CollectTCPConns {
		for _, name := range tcpPrograms {
			if !t.keepsOtherWays(name) {
				out = append(out, name)
			}
		}
	} else {
		for it, names := range tcpIterators {
			for _, name := range names {
				if it != t.tcpIter && !t.keepsOtherWays(name) {
					out = append(out, name)
				}
			}
		}
	}
	return out
}

// recvmsgFlagsArg finds the position of udp_recvmsg's flags argument in the
// kernel's BTF (3 since Linux 5.19, 4 before: an extra noblock argument),
// and how many arguments it has (6, 5, and 4 in newer kernels: no addr_len).
func recvmsgFlagsArg() (flags uint8, params int, err error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, 0, err
	}
	var fn *btf.Func
	if err := spec.TypeByName("udp_recvmsg", &fn); err != nil {
		return 0, 0, fmt.Errorf("udp_recvmsg in the kernel's BTF: %w", err)
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return 0, 0, fmt.Errorf("udp_recvmsg in the kernel's BTF: %T is not a function prototype", fn.Type)
	}
	for i, p := range proto.Params {
		if p.Name == "flags" {
			return uint8(i), len(proto.Params), nil
		}
	}
	return 0, 0, errors.New("udp_recvmsg in the kernel's BTF has no argument named flags")
}

// assignLoaded hands the loaded maps, variables and programs of coll to
// objs; programs that were not loaded (unusedPrograms) stay nil.
func assignLoaded(coll *ebpf.Collection, objs *bpf.ConntraceObjects) error {
	if err := coll.Assign(&objs.ConntraceMaps); err != nil {
		return err
	}
	if err := coll.Assign(&objs.ConntraceVariables); err != nil {
		return err
	}
	progs := reflect.ValueOf(&objs.ConntracePrograms).Elem()
	for i := range progs.NumField() {
		name := progs.Type().Field(i).Tag.Get("ebpf")
		if p, ok := coll.Programs[name]; ok {
			progs.Field(i).Set(reflect.ValueOf(p))
			delete(coll.Programs, name) // owned by objs now
		}
	}
	return nil
}

// programsByName maps program names to the loaded programs (nil when not
// loaded).
func programsByName(objs *bpf.ConntracePrograms) map[string]*ebpf.Program {
	out := map[string]*ebpf.Program{}
	v := reflect.ValueOf(objs).Elem()
	for i := range v.NumField() {
		out[v.Type().Field(i).Tag.Get("ebpf")] = v.Field(i).Interface().(*ebpf.Program)
	}
	return out
}
