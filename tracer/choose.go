package tracer

// This file chooses the way this kernel is traced: how TCP finds its
// sockets (the iterator) and how UDP counts bytes (the hook).

import (
	"errors"
	"slices"
	"strings"
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

// Ways of finding the sockets for TCP (Tracer.tcpIter, Config.TCPIterator):
// the task_file iterator (every process's files, one pass), or iter/tcp
// opened in each network namespace with a task_file pass for the owners
// (bpf/tcp_iter.h).
const (
	TCPIteratorAuto     = "auto"
	TCPIteratorTaskFile = "task_file"
	TCPIteratorTCP      = "tcp"
)

// tcpIteratorNeeds is the capability each iterator needs beyond tcpNeeds.
var tcpIteratorNeeds = map[string]string{
	TCPIteratorTaskFile: "task_file_sock_storage",
	TCPIteratorTCP:      "iter_tcp_sock_storage",
}

// chooseTCPIterator returns how TCP finds its sockets on a kernel with caps
// when want (a Config.TCPIterator) is asked for, or "" and what is
// missing: auto takes task_file where the kernel offers it, else tcp, and
// on a kernel that cannot trace TCP at all returns "" (TCP is not traced,
// said at start-up). A forced iterator the kernel cannot use is an error
// naming the setting, as a forced UDP hook.
func chooseTCPIterator(want string, caps []Capability) (string, []string, error) {
	need, forced := tcpIteratorNeeds[want]
	if missing := lacking(caps, tcpNeeds...); len(missing) > 0 {
		if forced {
			return "", missing, &FieldError{Field: "TCPIterator", Value: want, Msg: "this kernel cannot trace TCP: " + strings.Join(missing, "; ")}
		}
		return "", missing, nil
	}
	if forced {
		if missing := lacking(caps, need); len(missing) > 0 {
			return "", missing, &FieldError{Field: "TCPIterator", Value: want, Msg: "this kernel refuses it: " + strings.Join(missing, "; ")}
		}
		return want, nil, nil
	}
	for _, it := range []string{TCPIteratorTaskFile, TCPIteratorTCP} {
		if len(lacking(caps, tcpIteratorNeeds[it])) == 0 {
			return it, nil, nil
		}
	}
	return "", lacking(caps, tcpIteratorNeeds[TCPIteratorTaskFile], tcpIteratorNeeds[TCPIteratorTCP]), nil
}

// TCPPossible says whether this kernel can trace TCP, and if not, why.
func TCPPossible() error {
	if it, missing, _ := chooseTCPIterator(TCPIteratorAuto, kernelSupport()); it == "" {
		return errors.New("the kernel lacks " + strings.Join(missing, "; "))
	}
	return nil
}

// TCPIteratorPossible says whether this kernel can trace TCP through it
// (TCPIteratorTaskFile or TCPIteratorTCP), and if not, why.
func TCPIteratorPossible(it string) error {
	got, missing, err := chooseTCPIterator(it, kernelSupport())
	if err == nil && got == "" {
		err = errors.New("the kernel lacks " + strings.Join(missing, "; "))
	}
	return err
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
	_, _, err := chooseUDPHook(hook, kernelSupport(), "")
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
