package tracer

import (
	"errors"
	"fmt"
	"reflect"
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
)

// The programs of each way of reading UDP: the cgroup hooks (the peer of
// sendto()/recvfrom()) serve both; the byte counts come from either the
// tracepoints or the kprobes, never both.
var (
	udpCgroupPrograms     = []string{"udp_sendmsg4", "udp_sendmsg6", "udp_recvmsg4", "udp_recvmsg6"}
	udpTracepointPrograms = []string{"handle_send_length", "handle_recv_length"}
	// udpSockCookie makes the cookie of new UDP sockets, which the kprobes
	// read but cannot make.
	udpSockCookie = "udp_sock_cookie"
	udpKprobes    = []struct {
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

// tcpPrograms are the programs of TCP tracing, all or none loaded.
var tcpPrograms = []string{"handle_set_state", "handle_destroy_sock", "handle_sockops", "seed_listeners", "seed_conns", "dump_conns"}

// tcpCapabilities are what TCP tracing needs beyond what start-up requires.
var tcpCapabilities = []string{"sk_storage_tracing", "bpf_sock_from_file", "atomic_fetch"}

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

// seedsUDPCookies says whether seed_listeners runs for UDP alone: with the
// kprobes it makes the cookies of the UDP sockets that existed before
// start-up, so it stays when TCP is off.
func (t *Tracer) seedsUDPCookies() bool {
	return t.udpHook == UDPHookKprobe && t.capability("bpf_sock_from_file")
}

// kprobeFunctions are the kernel functions the UDP fallback probes; the
// IPv4 ones are needed, the IPv6 ones (absent when IPv6 is a module that
// is not loaded) only for IPv6.
var kprobeFunctions = []struct {
	name     string
	required bool
}{{"udp_sendmsg", true}, {"udp_recvmsg", true}, {"udpv6_sendmsg", false}, {"udpv6_recvmsg", false}}

// UDPHookPossible says whether this kernel can count UDP bytes with hook
// (UDPHookTracepoint or UDPHookKprobe), and if not, why.
func UDPHookPossible(hook string) error {
	_, _, err := chooseUDPHook(hook, KernelSupport())
	return err
}

// chooseUDPHook decides how UDP bytes are read from what the configuration
// asks and what the kernel offers. It returns "" when UDP cannot be traced
// in auto mode, and an error naming the setting when a forced choice is
// impossible. why is said at start-up.
func chooseUDPHook(want string, caps []Capability) (hook, why string, err error) {
	tpMissing := lacking(caps, "tracepoint:sock/sock_send_length", "tracepoint:sock/sock_recv_length")
	kpMissing := lacking(caps, "kprobes", "probe_read_kernel", "function:udp_sendmsg", "function:udp_recvmsg")
	tp, kp := len(tpMissing) == 0, len(kpMissing) == 0
	switch {
	case want == UDPHookTracepoint && !tp:
		return "", "", fmt.Errorf("UDPHook %s: this kernel lacks the UDP length tracepoints (Linux 6.3+): %s", want, strings.Join(tpMissing, "; "))
	case want == UDPHookKprobe && !kp:
		return "", "", fmt.Errorf("UDPHook %s: this kernel cannot probe udp_sendmsg/udp_recvmsg: %s", want, strings.Join(kpMissing, "; "))
	case want == UDPHookTracepoint:
		return UDPHookTracepoint, "asked for (--tracer.udp-hook=tracepoint)", nil
	case want == UDPHookKprobe:
		return UDPHookKprobe, "asked for (--tracer.udp-hook=kprobe)", nil
	case tp:
		return UDPHookTracepoint, "the kernel has the sock_send_length and sock_recv_length tracepoints: exact, and the cheapest hook", nil
	case kp:
		return UDPHookKprobe, "the kernel lacks the UDP length tracepoints (" + strings.Join(tpMissing, "; ") + "); kprobes on udp_sendmsg/udp_recvmsg give the same return values", nil
	default:
		return "", "neither the UDP length tracepoints (" + strings.Join(tpMissing, "; ") + ") nor kprobes (" + strings.Join(kpMissing, "; ") + ")", nil
	}
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
		out = append(out, udpSockCookie)
	}
	if t.udpHook == "" {
		out = append(out, udpCgroupPrograms...)
	}
	if !t.cfg.DNSInspection {
		out = append(out, "dns_ingress")
	}
	if !t.capability("tracepoint:tcp/tcp_destroy_sock") {
		out = append(out, "handle_destroy_sock")
	}
	if !t.cfg.CollectTCPConns {
		for _, name := range tcpPrograms {
			if name != "seed_listeners" || !t.seedsUDPCookies() {
				out = append(out, name)
			}
		}
	}
	return out
}

// recvmsgFlagsArg finds the position of udp_recvmsg's flags argument in the
// kernel's BTF: 3 since Linux 5.19, 4 before (an extra noblock argument).
func recvmsgFlagsArg() (uint8, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, err
	}
	var fn *btf.Func
	if err := spec.TypeByName("udp_recvmsg", &fn); err != nil {
		return 0, fmt.Errorf("udp_recvmsg in the kernel's BTF: %w", err)
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return 0, fmt.Errorf("udp_recvmsg in the kernel's BTF: %T is not a function prototype", fn.Type)
	}
	for i, p := range proto.Params {
		if p.Name == "flags" {
			return uint8(i), nil
		}
	}
	return 0, errors.New("udp_recvmsg in the kernel's BTF has no argument named flags")
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
