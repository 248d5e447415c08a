package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/cilium/ebpf"

	"github.com/conntrace/conntrace_exporter/bpf"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

func TestParseKernelRelease(t *testing.T) {
	for rel, want := range map[string]uint32{
		"6.18.44-fc-v782":   6<<16 | 18<<8 | 44,
		"5.4.0-150-generic": 5<<16 | 4<<8,
		"4.18.0-513.el8_9":  4<<16 | 18<<8,
		"6.1.300":           6<<16 | 1<<8 | 255, // the patch level saturates, as KERNEL_VERSION
		"6.8-rc1":           6<<16 | 8<<8,
		"5.15.0+debug":      5<<16 | 15<<8,
	} {
		got, err := parseKernelRelease(rel)
		if err != nil || got != want {
			t.Errorf("%s: %#x %v, want %#x", rel, got, err, want)
		}
	}
	if _, err := parseKernelRelease("vmlinuz"); err == nil {
		t.Error("a release without a version parsed")
	}
	if v, err := CurrentKernelVersion(); err != nil || v < 5<<16 {
		t.Errorf("CurrentKernelVersion: %#x %v", v, err)
	}
}

// What this project's kernel offers (shared/design/KERNEL.md): BTF and the
// tracepoints, no kprobes.
func TestKernelSupportHere(t *testing.T) {
	got := map[string]Capability{}
	for _, c := range KernelSupport() {
		got[c.Name] = c
	}
	for _, name := range []string{"btf", "tracepoint:sock/inet_sock_set_state", "tracepoint:sock/sock_send_length", "bpf_stats"} {
		if !got[name].Available {
			t.Errorf("%s: not available (%s)", name, got[name].Reason)
		}
	}
	if got["kprobes"].Available || got["kprobes"].Reason == "" {
		t.Errorf("kprobes: %+v; this kernel has none", got["kprobes"])
	}
	if ok, why := IsTracerSupportedByOS(); !ok {
		t.Errorf("not supported here: %s", why)
	}
}

// Every program of the object passes the verifier on its own, whether or
// not it is attached on this kernel.
func TestEveryProgramPassesTheVerifier(t *testing.T) {
	nettest.RequireRoot(t)
	spec, err := bpf.LoadConntrace()
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Programs) < 13 {
		t.Errorf("%d programs in the object, want at least 13", len(spec.Programs))
	}
	load := func(name string, prog *ebpf.ProgramSpec, variant string) {
		one := *spec
		one.Programs = map[string]*ebpf.ProgramSpec{name: prog}
		coll, err := ebpf.NewCollection(&one)
		if err != nil {
			t.Errorf("%s (%s%s): %v", name, prog.SectionName, variant, err)
			return
		}
		coll.Close()
	}
	for name, prog := range spec.Programs {
		load(name, prog, "")
	}
	// The recvmsg kprobes read flags from another register on kernels
	// before 5.19: that branch passes the verifier too.
	if err := spec.Variables["recvmsg_flags_arg"].Set(uint8(4)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kprobe_udp_recvmsg", "kprobe_udpv6_recvmsg"} {
		load(name, spec.Programs[name], ", flags in the 5th argument")
	}
}

// The kprobe variant loads as the tracer loads it on a kernel without the
// UDP length tracepoints: the whole object without the tracepoint programs.
// It cannot attach here (no kprobes), and says so naming the hook.
func TestUDPKprobeVariantLoads(t *testing.T) {
	nettest.RequireRoot(t)
	cfg := NewDefaultConfig()
	tr := &Tracer{cfg: cfg, support: KernelSupport(), udpHook: UDPHookKprobe, logger: log.NewNopLogger()}
	if err := tr.load(); err != nil {
		t.Fatalf("loading the kprobe variant: %v", err)
	}
	defer tr.objs.Close()
	progs := tr.programs()
	for _, k := range udpKprobes {
		if progs[k.program] == nil {
			t.Errorf("%s not loaded", k.program)
		}
	}
	for _, name := range udpTracepointPrograms {
		if progs[name] != nil {
			t.Errorf("%s loaded with the kprobe variant", name)
		}
	}
	if tr.objs.UdpFlows == nil || tr.objs.HandleSetState == nil {
		t.Error("maps or TCP programs missing")
	}
	err := tr.attachUDPKprobes(t.TempDir())
	for _, l := range tr.links {
		l.Close()
	}
	if err == nil {
		t.Fatal("kprobes attached on a kernel without kprobes (KERNEL.md)")
	}
	if !strings.Contains(err.Error(), "udp_sock_cookie") && (!strings.Contains(err.Error(), "kprobe_udp_sendmsg") || !strings.Contains(err.Error(), "udp_sendmsg")) {
		t.Errorf("attach error does not name the program and function: %v", err)
	}
}

func TestRecvmsgFlagsArgHere(t *testing.T) {
	arg, err := recvmsgFlagsArg()
	if err != nil {
		t.Fatal(err)
	}
	if arg != 3 { // Linux 6.18: udp_recvmsg(sk, msg, len, flags, addr_len)
		t.Errorf("flags is argument %d, want 3", arg)
	}
}

func TestChooseUDPHook(t *testing.T) {
	caps := func(tp, kp bool) []Capability {
		return []Capability{
			{Name: "tracepoint:sock/sock_send_length", Available: tp, Reason: "not in this kernel (btf_trace_sock_send_length)"},
			{Name: "tracepoint:sock/sock_recv_length", Available: tp, Reason: "not in this kernel (btf_trace_sock_recv_length)"},
			{Name: "kprobes", Available: kp, Reason: "no kprobe PMU"},
			{Name: "probe_read_kernel", Available: true},
			{Name: "function:udp_sendmsg", Available: true},
			{Name: "function:udp_recvmsg", Available: true},
		}
	}
	for _, c := range []struct {
		want    string
		tp, kp  bool
		hook    string
		errPart string
	}{
		{UDPHookAuto, true, true, UDPHookTracepoint, ""},
		{UDPHookAuto, true, false, UDPHookTracepoint, ""},
		{UDPHookAuto, false, true, UDPHookKprobe, ""},
		{UDPHookAuto, false, false, "", ""},
		{UDPHookKprobe, true, true, UDPHookKprobe, ""},
		{UDPHookTracepoint, false, true, "", "lacks the UDP length tracepoints"},
		{UDPHookKprobe, true, false, "", "kprobes: no kprobe PMU"},
	} {
		hook, why, err := chooseUDPHook(c.want, caps(c.tp, c.kp))
		name := fmt.Sprintf("%s tp=%v kp=%v", c.want, c.tp, c.kp)
		if hook != c.hook {
			t.Errorf("%s: hook %q, want %q", name, hook, c.hook)
		}
		if c.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), c.errPart) || !strings.Contains(err.Error(), "UDPHook") {
				t.Errorf("%s: error %v, want one naming UDPHook and %q", name, err, c.errPart)
			}
			continue
		}
		if err != nil || why == "" {
			t.Errorf("%s: %v, why %q", name, err, why)
		}
	}
	// lockdown=confidentiality: kprobes exist but cannot read the socket.
	locked := caps(false, true)
	locked[3] = Capability{Name: "probe_read_kernel", Reason: "lockdown=confidentiality refuses bpf_probe_read_kernel and kprobes"}
	if hook, why, err := chooseUDPHook(UDPHookAuto, locked); hook != "" || err != nil || !strings.Contains(why, "lockdown") {
		t.Errorf("auto under lockdown=confidentiality: %q %q %v, want no UDP, saying why", hook, why, err)
	}
}

func TestReadLockdown(t *testing.T) {
	dir := t.TempDir()
	for text, want := range map[string]string{
		"none [integrity] confidentiality\n": "integrity",
		"[none] integrity confidentiality\n": "none",
		"none integrity [confidentiality]\n": "confidentiality",
	} {
		path := filepath.Join(dir, "lockdown")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := readLockdown(path); got != want {
			t.Errorf("%q: %q, want %q", text, got, want)
		}
	}
	if got := readLockdown(filepath.Join(dir, "missing")); got != "" {
		t.Errorf("missing file: %q", got)
	}
}

// Asking for kprobes here stops start-up with an error that says why.
func TestUDPHookKprobeRefusedHere(t *testing.T) {
	nettest.RequireRoot(t)
	cfg := NewDefaultConfig()
	cfg.UDPHook = UDPHookKprobe
	tr, err := New(cfg, log.NewNopLogger())
	if err == nil {
		tr.Close()
		t.Fatal("started with kprobes on a kernel without them")
	}
	if !strings.Contains(err.Error(), "UDPHook kprobe:") || !strings.Contains(err.Error(), "kprobes") {
		t.Errorf("error does not say why: %v", err)
	}
}
