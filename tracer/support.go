package tracer

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/conntrace/conntrace_exporter/bpf"
	"golang.org/x/sys/unix"
)

// Capability is one thing the tracer uses from the kernel, whether this
// kernel has it, and what is lost without it.
type Capability struct {
	Name      string
	Available bool
	Required  bool   // the tracer cannot start without it
	Costs     string // what is lost without it
	Reason    string // why it is missing
}

// currentKernelVersion returns the running kernel's version as
// KERNEL_VERSION(a, b, c) = a<<16 + b<<8 + c (c capped at 255).
func currentKernelVersion() (uint32, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return 0, err
	}
	return parseKernelRelease(unix.ByteSliceToString(u.Release[:]))
}

func parseKernelRelease(rel string) (uint32, error) {
	var v [3]uint32
	f := strings.FieldsFunc(rel, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' })
	for i := 0; i < 3 && i < len(f); i++ {
		n, err := strconv.ParseUint(f[i], 10, 32)
		if err != nil {
			if i == 0 {
				return 0, fmt.Errorf("kernel release %q: no version number", rel)
			}
			break
		}
		v[i] = uint32(n)
	}
	return v[0]<<16 | v[1]<<8 | min(v[2], 255), nil
}

// Kernel versions of what the BPF programs use and no BTF type shows.
const (
	kernelSkStorageTracing = 5<<16 | 11<<8 // bpf_sk_storage_get in tracing programs, bpf_sock_from_file
	kernelAtomicFetch      = 5<<16 | 12<<8 // BPF atomics that return the old value (BPF_FETCH)
	kernelRTTSampleArg     = 6<<16 | 10<<8 // the sockops RTT callback passes the sample in args[0]
)

// versionCaps are what the programs need that neither BTF nor a file
// shows: known from the kernel version (a kernel with backports, as RHEL's,
// may have them earlier).
var versionCaps = []struct {
	name, costs string
	since       uint32
	required    bool
}{
	{"sk_storage_tracing", "TCP: connection state lives in socket local storage, which tracing programs reach since 5.11", kernelSkStorageTracing, false},
	{"bpf_sock_from_file", "TCP: the socket iterator finds sockets through it", kernelSkStorageTracing, false},
	{"atomic_fetch", "TCP: the tracked-connection limit needs an atomic add that returns the old value", kernelAtomicFetch, false},
	{"sockops_rtt_sample", "the RTT histogram holds the smoothed RTT at each round trip instead of the round trip's own sample", kernelRTTSampleArg, false},
}

// tracepoints the tracer attaches, as BTF tracepoint types.
var tracepointCaps = []struct {
	name, btfType, costs string
	required             bool
}{
	{"tracepoint:sock/inet_sock_set_state", "btf_trace_inet_sock_set_state", "everything TCP", true},
	{"tracepoint:tcp/tcp_destroy_sock", "btf_trace_tcp_destroy_sock", "nothing but a safety net for closes", false},
	{"tracepoint:tcp/tcp_cong_state_set", "btf_trace_tcp_cong_state_set", "conntrace_fast_recoveries_total (Linux 6.4+)", false},
	{"tracepoint:tcp/tcp_retransmit_synack", "btf_trace_tcp_retransmit_synack", "conntrace_listen_synack_retransmits_total", false},
	{"tracepoint:tcp/tcp_send_reset", "btf_trace_tcp_send_reset", "conntrace_resets_sent_total", false},
	{"tracepoint:tcp/tcp_receive_reset", "btf_trace_tcp_receive_reset", "conntrace_resets_received_total", false},
	{"tracepoint:sock/sock_send_length", "btf_trace_sock_send_length", "UDP flows (bytes sent)", false},
	{"tracepoint:cgroup/cgroup_mkdir", "btf_trace_cgroup_mkdir", "the names of cgroups made after start-up (found by a walk instead)", false},
	{"tracepoint:cgroup/cgroup_rmdir", "btf_trace_cgroup_rmdir", "forgetting removed cgroups' names (kept until the cache is full)", false},
	{"tracepoint:sock/sock_recv_length", "btf_trace_sock_recv_length", "UDP flows (bytes received)", false},
}

// kernelSupport checks, before anything is loaded, what this kernel offers
// the tracer: from /sys, /proc and the kernel's BTF, except fexit, which it
// tries (probeFentry: without the privilege to load programs, it says fexit
// is missing and why).
func kernelSupport() []Capability {
	var caps []Capability
	_, btfErr := os.Stat(vmlinuxBTF)
	caps = append(caps, Capability{Name: "btf", Available: btfErr == nil, Required: true,
		Costs: "everything: CO-RE needs the kernel's BTF", Reason: reasonOf(btfErr)})
	spec, specErr := btf.LoadKernelSpec()
	for _, tp := range tracepointCaps {
		c := Capability{Name: tp.name, Required: tp.required, Costs: tp.costs}
		if specErr != nil {
			c.Reason = specErr.Error()
		} else if _, err := spec.AnyTypeByName(tp.btfType); err != nil {
			c.Reason = "not in this kernel (" + tp.btfType + ")"
		} else {
			c.Available = true
		}
		caps = append(caps, c)
	}
	caps = append(caps, resetNoSocketCap(spec, specErr))
	_, kpErr := os.Stat("/sys/bus/event_source/devices/kprobe/type")
	caps = append(caps, Capability{Name: "kprobes", Available: kpErr == nil,
		Costs: "UDP on kernels without the UDP length tracepoints (the kprobe fallback); nothing where they exist", Reason: reasonOf(kpErr)})
	fentry := Capability{Name: "fentry", Costs: "the UDP fexit fallback (kernels without the UDP length tracepoints then use kprobes)"}
	if err := probeFentry(); err != nil {
		fentry.Reason = err.Error()
	} else {
		fentry.Available = true
	}
	caps = append(caps, fentry)
	prk := Capability{Name: "probe_read_kernel", Available: true, Costs: "the UDP fexit and kprobe fallbacks (they read kernel memory)"}
	if readLockdown("/sys/kernel/security/lockdown") == "confidentiality" {
		prk.Available, prk.Reason = false, "lockdown=confidentiality refuses bpf_probe_read_kernel and kprobes"
	}
	caps = append(caps, prk)
	for _, fn := range kprobeFunctions {
		c := Capability{Name: "function:" + fn.name, Costs: "the UDP fexit and kprobe fallbacks"}
		if !fn.required {
			c.Costs += " for IPv6"
		}
		var f *btf.Func
		switch {
		case specErr != nil:
			c.Reason = specErr.Error()
		case spec.TypeByName(fn.name, &f) != nil:
			c.Reason = "not in the kernel's BTF"
		default:
			c.Available = true
		}
		caps = append(caps, c)
	}
	version, verErr := currentKernelVersion()
	for _, vc := range versionCaps {
		c := Capability{Name: vc.name, Required: vc.required, Costs: vc.costs}
		switch {
		case verErr != nil:
			c.Reason = verErr.Error()
		case version < vc.since:
			c.Reason = fmt.Sprintf("Linux %d.%d or later", vc.since>>16, vc.since>>8&0xff)
		default:
			c.Available = true
		}
		caps = append(caps, c)
	}
	for _, it := range []struct{ name, prog, costs string }{
		{"task_file_sock_storage", "dump_conns", "TCP through the task_file iterator (the sockets of every process, in every namespace, in one pass); else through iter/tcp"},
		{"iter_tcp_sock_storage", "dump_conns_tcp", "TCP through iter/tcp, where the task_file iterator is refused or --tracer.tcp-iterator=tcp asks for it"},
	} {
		c := Capability{Name: it.name, Costs: it.costs}
		if err := probeProgram(it.prog); err != nil {
			c.Reason = err.Error()
		} else {
			c.Available = true
		}
		caps = append(caps, c)
	}
	_, statsErr := os.Stat("/proc/sys/kernel/bpf_stats_enabled")
	caps = append(caps, Capability{Name: "bpf_stats", Available: statsErr == nil,
		Costs: "conntrace_bpf_program_runs_total and _run_seconds_total", Reason: reasonOf(statsErr)})
	_, kpfErr := readKprobeProfile("")
	caps = append(caps, Capability{Name: "kprobe_profile", Available: kpfErr == nil,
		Costs: "conntrace_probe_hits and conntrace_probe_misses", Reason: reasonOf(kpfErr)})
	return caps
}

// probeFentry attaches a program that does nothing to the exit of
// udp_sendmsg, and detaches it: whether fexit loads (some locked-down
// kernels refuse it) and attaches (BPF trampolines) is known only by trying.
// Tried once per process.
var probeFentry = sync.OnceValue(func() error {
	if err := rlimit.RemoveMemlock(); err != nil { // before Linux 5.11
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "probe_fexit",
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceFExit,
		AttachTo:     "udp_sendmsg",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("loading an fexit program on udp_sendmsg: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceFExit})
	if err != nil {
		return fmt.Errorf("attaching an fexit program to udp_sendmsg: %w", err)
	}
	return l.Close()
})

// probeProgram loads one program of the object alone, with its maps: the
// TCP iterators find sockets in ways some verifiers refuse whatever the
// version says (dump_conns: the socket read from a file is untrusted on
// 6.18.44-fc-v1045). Tried once per program and process.
func probeProgram(name string) error {
	probesMu.Lock()
	defer probesMu.Unlock()
	if err, ok := probes[name]; ok {
		return err
	}
	err := loadAlone(name)
	probes[name] = err
	return err
}

var (
	probesMu sync.Mutex
	probes   = map[string]error{}
)

func loadAlone(name string) error {
	if err := rlimit.RemoveMemlock(); err != nil { // before Linux 5.11
		return err
	}
	spec, err := bpf.LoadConntrace()
	if err != nil {
		return err
	}
	if spec.Programs[name] == nil {
		return fmt.Errorf("no program %s in the object", name)
	}
	// LoadAndAssign loads the program and only the maps it uses: a struct
	// with one field tagged with its name.
	objs := reflect.New(reflect.StructOf([]reflect.StructField{{
		Name: "Prog",
		Type: reflect.TypeOf((*ebpf.Program)(nil)),
		Tag:  reflect.StructTag(`ebpf:"` + name + `"`),
	}}))
	err = spec.LoadAndAssign(objs.Interface(), nil)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) && len(ve.Log) > 0 {
			// The line that says why; the rest is the trace.
			return fmt.Errorf("the verifier refuses %s: %s", name, lastVerifierReason(ve.Log))
		}
		return fmt.Errorf("loading %s: %w", name, err)
	}
	return objs.Elem().Field(0).Interface().(*ebpf.Program).Close()
}

// lastVerifierReason is the verifier's reason for refusing a program: the
// last line of its log that is not the closing statistics.
func lastVerifierReason(log []string) string {
	for i := len(log) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(log[i]); l != "" && !strings.HasPrefix(l, "processed ") && !strings.HasPrefix(l, "verification time") && !strings.HasPrefix(l, "stack depth") {
			return l
		}
	}
	return "no reason logged"
}

// readLockdown returns the kernel's lockdown mode (none, integrity,
// confidentiality), or "" when securityfs is not readable.
func readLockdown(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(b)) {
		if strings.HasPrefix(f, "[") && strings.HasSuffix(f, "]") {
			return strings.Trim(f, "[]")
		}
	}
	return ""
}

func reasonOf(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (t *Tracer) capability(name string) bool {
	for _, c := range t.support {
		if c.Name == name {
			return c.Available
		}
	}
	return false
}
