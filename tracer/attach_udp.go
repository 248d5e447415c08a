package tracer

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/go-kit/log/level"
)

// attachUDP attaches the UDP programs: the cgroup hooks that see the peer of
// sendto()/recvfrom(), and the tracepoints that see the bytes each call moved.
func (t *Tracer) attachUDP(cgroupPath string) error {
	if err := t.attachCgroup(cgroupPath, "cgroup_sock_addr", []cgroupHook{
		{t.objs.UdpSendmsg4, "udp_sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, "sendmsg4"},
		{t.objs.UdpSendmsg6, "udp_sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, "sendmsg6"},
		{t.objs.UdpRecvmsg4, "udp_recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, "recvmsg4"},
		{t.objs.UdpRecvmsg6, "udp_recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, "recvmsg6"},
	}); err != nil {
		return err
	}
	switch t.udpHook {
	case UDPHookKprobe:
		return t.attachUDPKprobes(cgroupPath)
	case UDPHookFentry:
		return t.attachUDPFentry(cgroupPath)
	}
	for _, tp := range []struct {
		prog *ebpf.Program
		name string
		hook string
	}{
		{t.objs.HandleSendLength, "handle_send_length", "sock/sock_send_length"},
		{t.objs.HandleRecvLength, "handle_recv_length", "sock/sock_recv_length"},
	} {
		l, err := link.AttachTracing(link.TracingOptions{Program: tp.prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return fmt.Errorf("attaching %s to the BTF tracepoint %s: %w", tp.name, tp.hook, err)
		}
		t.attached(l, Attachment{Program: tp.name, Hook: tp.hook, Attach: "tp_btf"})
	}
	return nil
}

// kretprobeMaxActive is how many calls of one function a kretprobe can
// follow at once. The kernel's default (about twice the CPUs) is far too few
// for udp_recvmsg, where every thread blocked in recvfrom() holds one: a
// return without an instance is missed, and its bytes with it.
const kretprobeMaxActive = 4096

// attachUDPCookies attaches the program that gives new UDP sockets a
// cookie, for the fallbacks that read cookies but cannot make them.
func (t *Tracer) attachUDPCookies(cgroupPath string) error {
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: ebpf.AttachCGroupInetSockCreate, Program: t.objs.UdpSockCookie})
	if err != nil {
		return fmt.Errorf("attaching %s to the cgroup v2 root %s (sock_create): %w", udpSockCookie, cgroupPath, err)
	}
	t.attached(l, Attachment{Program: udpSockCookie, Hook: "cgroup " + cgroupPath + " sock_create", Attach: "cgroup_sock"})
	return nil
}

// attachUDPFentry attaches the fexit fallback for the UDP byte counts (one
// program per function, the recvmsg ones of this kernel's signature) and
// the cookie program. Without the IPv6 functions in the kernel's BTF (IPv6
// a module), IPv6 UDP is not counted, and start-up says so.
func (t *Tracer) attachUDPFentry(cgroupPath string) error {
	if err := t.attachUDPCookies(cgroupPath); err != nil {
		return err
	}
	progs := t.programs()
	for _, f := range udpFentries {
		prog := progs[f.program]
		if f.params != 0 && f.params != t.recvParams {
			continue
		}
		if prog == nil && f.ipv6 {
			level.Warn(t.logger).Log("msg", "IPv6 UDP is not traced: the kernel's BTF has no "+f.function)
			continue
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFExit})
		if err != nil {
			return fmt.Errorf("attaching %s to the exit of %s (fexit): %w", f.program, f.function, err)
		}
		t.attached(l, Attachment{Program: f.program, Hook: f.function, Attach: "fexit"})
	}
	return nil
}

// attachUDPKprobes attaches the kprobe fallback for the UDP byte counts and
// the cookie program. The IPv6 functions may be missing (IPv6 built as a
// module and not loaded): IPv6 UDP is then not counted, and start-up says
// so.
func (t *Tracer) attachUDPKprobes(cgroupPath string) error {
	if err := t.attachUDPCookies(cgroupPath); err != nil {
		return err
	}
	progs := t.programs()
	for _, k := range udpKprobes {
		var (
			l    link.Link
			err  error
			mode = "kprobe"
		)
		if k.ret {
			mode = "kretprobe"
			// maxactive needs a tracefs kprobe; without tracefs, the
			// kernel's default and a warning.
			l, err = link.Kretprobe(k.function, progs[k.program], &link.KprobeOptions{RetprobeMaxActive: kretprobeMaxActive})
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				level.Warn(t.logger).Log("msg", "kretprobe without maxactive: calls beyond about twice the CPUs at once (blocked receivers) are missed", "function", k.function, "err", err)
				l, err = link.Kretprobe(k.function, progs[k.program], nil)
			}
		} else {
			l, err = link.Kprobe(k.function, progs[k.program], nil)
		}
		if err != nil && k.ipv6 && errors.Is(err, os.ErrNotExist) {
			level.Warn(t.logger).Log("msg", "IPv6 UDP is not traced: the kernel has no "+k.function, "err", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("attaching %s to the %s of %s: %w", k.program, mode, k.function, err)
		}
		t.attached(l, Attachment{Program: k.program, Hook: k.function, Attach: mode})
	}
	return nil
}
