package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/go-kit/log/level"
)

// Attachment describes one attached BPF program, for the start-up log and
// conntrace_bpf_program_info.
type Attachment struct {
	Program string // program name in the object
	Hook    string // e.g. "sock/inet_sock_set_state", "cgroup /sys/fs/cgroup/unified"
	Attach  string // e.g. "tp_btf", "sockops", "iter"
}

// kretprobeMaxActive is how many calls of one function a kretprobe can
// follow at once. The kernel's default (about twice the CPUs) is far too few
// for udp_recvmsg, where every thread blocked in recvfrom() holds one: a
// return without an instance is missed, and its bytes with it.
const kretprobeMaxActive = 4096

// attach attaches every loaded program of the catalogue but the seeding
// iterators (seed runs them), in the catalogue's order.
func (t *Tracer) attach(cgroupPath string) error {
	return t.attachWhere(cgroupPath, func(p *program) bool { return !p.once })
}

// attachWhere attaches the loaded programs of the catalogue that sel
// selects.
func (t *Tracer) attachWhere(cgroupPath string, sel func(*program) bool) error {
	progs := t.programs()
	for i := range catalogue {
		p := &catalogue[i]
		if !sel(p) || !p.wanted(t) {
			continue
		}
		prog := progs[p.name]
		if prog == nil && p.optional == "" {
			return fmt.Errorf("program %s is wanted but was not loaded (is it in the bpf2go objects? make generate)", p.name)
		}
		if prog == nil {
			// An optional program the kernel cannot carry (loads).
			level.Warn(t.logger).Log("msg", "program not attached: the kernel lacks what it needs", "program", p.name,
				"costs", p.optional, "lacking", strings.Join(lacking(t.support, p.needs...), "; "))
			continue
		}
		l, a, err := t.attachOne(p, prog, cgroupPath)
		if errors.Is(err, os.ErrNotExist) && p.optional != "" {
			level.Warn(t.logger).Log("msg", "program not attached: the kernel has no "+p.hook, "program", p.name, "costs", p.optional, "err", err)
			continue
		}
		if err != nil {
			return err
		}
		if p.kind == kindIter {
			t.dumpIter = l.(*link.Iter) // the one read at each scrape (attach leaves the seeding ones to seed)
		}
		t.links = append(t.links, l)
		t.attachments = append(t.attachments, a)
	}
	return nil
}

// attachOne attaches prog, the program of p, the way of its kind.
func (t *Tracer) attachOne(p *program, prog *ebpf.Program, cgroupPath string) (link.Link, Attachment, error) {
	a := Attachment{Program: p.name, Hook: p.hook, Attach: p.kind}
	var (
		l     link.Link
		err   error
		where string // for the error: what it was attached to
	)
	switch p.kind {
	case kindTracepoint:
		where = "the BTF tracepoint " + p.hook
		l, err = link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	case kindFexit:
		where = "the exit of " + p.hook + " (fexit)"
		l, err = link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFExit})
	case kindKprobe:
		where = "the kprobe of " + p.hook
		l, err = link.Kprobe(p.hook, prog, nil)
	case kindKretprobe:
		where = "the kretprobe of " + p.hook
		// maxactive needs a tracefs kprobe; without tracefs, the
		// kernel's default and a warning.
		l, err = link.Kretprobe(p.hook, prog, &link.KprobeOptions{RetprobeMaxActive: kretprobeMaxActive})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			level.Warn(t.logger).Log("msg", "kretprobe without maxactive: calls beyond about twice the CPUs at once (blocked receivers) are missed", "function", p.hook, "err", err)
			l, err = link.Kretprobe(p.hook, prog, nil)
		}
	case kindSockops, kindSockAddr, kindSock, kindSkb:
		what := p.kind
		a.Hook = "cgroup " + cgroupPath
		if p.hook != "" {
			a.Hook, what = a.Hook+" "+p.hook, what+" "+p.hook
		}
		where = "the cgroup v2 root " + cgroupPath + " (" + what + ")"
		l, err = link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: p.cgroup, Program: prog})
	case kindIter:
		l, err = link.AttachIter(link.IterOptions{Program: prog})
		if err != nil {
			return nil, a, fmt.Errorf("attaching the iterator %s: %w", p.name, err)
		}
	default:
		return nil, a, fmt.Errorf("program %s: attach kind %q unknown", p.name, p.kind)
	}
	if err != nil {
		return nil, a, fmt.Errorf("attaching %s to %s: %w", p.name, where, err)
	}
	return l, a, nil
}

// seed finds the connections that existed before start-up: it runs the
// catalogue's seeding iterators once each, in order (a first pass over
// every process's files records listeners, a second one tracks
// connections). The tracepoints are already attached, so nothing opened
// meanwhile is missed.
func (t *Tracer) seed() error {
	progs := t.programs()
	for i := range catalogue {
		p := &catalogue[i]
		prog := progs[p.name]
		if !p.once || prog == nil {
			continue // not this kernel's way, or no TCP
		}
		l, a, err := t.attachOne(p, prog, "")
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		err = t.readIterator(l.(*link.Iter), p.eachNetns, &buf)
		l.Close()
		if err != nil {
			return fmt.Errorf("running the iterator %s: %w", p.name, err)
		}
		t.attachments = append(t.attachments, a)
	}
	return nil
}

// readIterator writes what it shows to w: in every network namespace for
// an iter/tcp iterator (eachNetns), else in the exporter's.
func (t *Tracer) readIterator(it *link.Iter, eachNetns bool, w io.Writer) error {
	if eachNetns {
		return t.readEachNetns(it, w)
	}
	return readIter(it, w)
}

// readEachNetns reads it in every network namespace (iter/tcp), and says
// once when some cannot be entered: their connections are then reported
// from their close records only.
func (t *Tracer) readEachNetns(it *link.Iter, w io.Writer) error {
	refused, why, err := readIterInEachNetns(it, t.cfg.ProcRoot, w)
	if refused > 0 && !t.netnsWarned {
		t.netnsWarned = true
		level.Warn(t.logger).Log("msg", "some network namespaces cannot be entered (setns needs CAP_SYS_ADMIN): their TCP connections are counted from their close records only, not live", "namespaces", refused, "err", why)
	}
	return err
}
