package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

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
	if v, err := currentKernelVersion(); err != nil || v < 5<<16 {
		t.Errorf("currentKernelVersion: %#x %v", v, err)
	}
}

// What kernelSupport says matches what the running kernel does: each
// tracepoint is there iff tracefs lists it, kprobes are offered iff one
// attaches. Not tied to one kernel: the matrix (scripts/kernels) runs it on
// each, and every kernel there must be able to run the tracer.
func TestKernelSupportHere(t *testing.T) {
	nettest.RequireRoot(t)
	got := map[string]Capability{}
	for _, c := range kernelSupport() {
		got[c.Name] = c
	}
	if !got["btf"].Available {
		t.Errorf("btf: not available (%s)", got["btf"].Reason)
	}
	events := tracefsEvents(t)
	for _, tp := range tracepointCaps {
		_, err := os.Stat(filepath.Join(events, strings.TrimPrefix(tp.name, "tracepoint:")))
		if c := got[tp.name]; c.Available != (err == nil) {
			t.Errorf("%s: available=%v (%s), but tracefs: %v", tp.name, c.Available, c.Reason, err)
		}
	}
	attachErr := attachKprobe("udp_sendmsg")
	if c := got["kprobes"]; c.Available != (attachErr == nil) || (!c.Available && c.Reason == "") {
		t.Errorf("kprobes: available=%v (%s), but attaching one: %v", c.Available, c.Reason, attachErr)
	}
	if ok, why := IsTracerSupportedByOS(); !ok {
		t.Errorf("not supported here: %s", why)
	}
	t.Logf("tracepoint sock_send_length %v, kprobes %v", got["tracepoint:sock/sock_send_length"].Available, attachErr == nil)
}

// tracefsEvents returns tracefs' events directory, mounting tracefs (until
// the test ends) where it is not.
func tracefsEvents(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(filepath.Join(dir, "sock")); err == nil {
			return dir
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		t.Fatalf("no tracefs, and mounting it at /sys/kernel/tracing: %v", err)
	}
	t.Cleanup(func() { unix.Unmount("/sys/kernel/tracing", 0) })
	return "/sys/kernel/tracing/events"
}

// attachKprobe attaches a program that does nothing to fn, and detaches it.
func attachKprobe(fn string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Kprobe,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.Kprobe(fn, prog, nil)
	if err != nil {
		return err
	}
	return l.Close()
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
	// What this kernel lacks decides which programs it can carry; a program
	// it cannot must be refused, so what start-up says is checked too.
	caps := kernelSupport()
	refused, other := map[string]string{}, map[string]string{}
	// fexit programs load only where fexit does, and only for the
	// signature of this kernel's function.
	_, params, err := recvmsgFlagsArg()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range catalogue {
		switch missing := lacking(caps, p.needs...); {
		case len(missing) > 0:
			refused[p.name] = strings.Join(missing, "; ")
		case p.recvParams != 0 && p.recvParams != params:
			// A signature with fewer arguments than the kernel's
			// may pass an old verifier (5.10 does not check that
			// the return value is after the last argument): the
			// loader never loads it, so it is not tried.
			other[p.name] = fmt.Sprintf("for a udp_recvmsg of %d arguments, this kernel's has %d", p.recvParams, params)
		}
	}
	load := func(name string, prog *ebpf.ProgramSpec, variant string) {
		one := *spec
		one.Programs = map[string]*ebpf.ProgramSpec{name: prog}
		coll, err := ebpf.NewCollection(&one)
		why, lacks := refused[name]
		switch {
		case err != nil && !lacks:
			t.Errorf("%s (%s%s): %v", name, prog.SectionName, variant, err)
		case err == nil && lacks:
			t.Errorf("%s (%s%s) loaded, on a kernel said to lack %s", name, prog.SectionName, variant, why)
		case lacks:
			t.Logf("%s: refused, as expected without %s", name, why)
		}
		if err == nil {
			coll.Close()
		}
	}
	for name, prog := range spec.Programs {
		if why, ok := other[name]; ok {
			t.Logf("%s: not loaded, %s", name, why)
			continue
		}
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
	cfg.UDPHook = UDPHookKprobe
	tr := &Tracer{cfg: cfg, support: kernelSupport(), udpHook: UDPHookKprobe, logger: log.NewNopLogger()}
	cfg.CollectTCPConns = TCPPossible() == nil
	if err := tr.load(); err != nil {
		t.Fatalf("loading the kprobe variant: %v", err)
	}
	defer tr.objs.Close()
	progs := tr.programs()
	for _, name := range programsWhere(func(p *program) bool { return p.kind == kindKprobe || p.kind == kindKretprobe }) {
		if progs[name] == nil {
			t.Errorf("%s not loaded", name)
		}
	}
	for _, name := range udpTracepointPrograms() {
		if progs[name] != nil {
			t.Errorf("%s loaded with the kprobe variant", name)
		}
	}
	if tr.objs.UdpFlows == nil || (cfg.CollectTCPConns && tr.objs.HandleSetState == nil) {
		t.Error("maps or TCP programs missing")
	}
	// Attached where the kernel has kprobes, refused with a clear error
	// where not.
	cgroupPath, err := checkPrerequisites(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = tr.attachWhere(cgroupPath, func(p *program) bool {
		return p.kind == kindKprobe || p.kind == kindKretprobe || p.name == "udp_sock_cookie"
	})
	for _, l := range tr.links {
		l.Close()
	}
	if tr.capability("kprobes") {
		if err != nil {
			t.Fatalf("the kernel has kprobes, but the UDP kprobes did not attach: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatal("kprobes attached on a kernel said to have none")
	}
	if !strings.Contains(err.Error(), "udp_sock_cookie") && (!strings.Contains(err.Error(), "kprobe_udp_sendmsg") || !strings.Contains(err.Error(), "udp_sendmsg")) {
		t.Errorf("attach error does not name the program and function: %v", err)
	}
}

// The fexit variant loads and attaches where the kernel has fexit, with the
// recvmsg programs of this kernel's signature only; where it has not, the
// load is refused naming an fexit program.
func TestUDPFentryVariantLoads(t *testing.T) {
	nettest.RequireRoot(t)
	cfg := NewDefaultConfig()
	cfg.UDPHook = UDPHookFentry
	tr := &Tracer{cfg: cfg, support: kernelSupport(), udpHook: UDPHookFentry, logger: log.NewNopLogger()}
	cfg.CollectTCPConns = TCPPossible() == nil
	err := tr.load()
	if !tr.capability("fentry") {
		if err == nil {
			tr.objs.Close()
			t.Fatal("the fexit variant loaded on a kernel said to lack fexit")
		}
		if !strings.Contains(err.Error(), "fexit_udp") {
			t.Errorf("load error does not name the fexit program: %v", err)
		}
		t.Logf("refused, as expected without fexit: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("loading the fexit variant: %v", err)
	}
	defer tr.objs.Close()
	progs := tr.programs()
	for _, f := range catalogue {
		if f.kind != kindFexit {
			continue
		}
		want := f.recvParams == 0 || f.recvParams == tr.recvParams
		if (progs[f.name] != nil) != want {
			t.Errorf("%s loaded: %v, want %v (udp_recvmsg has %d arguments here)", f.name, progs[f.name] != nil, want, tr.recvParams)
		}
	}
	for _, name := range append(udpTracepointPrograms(), "kprobe_udp_sendmsg", "kretprobe_udp_recvmsg") {
		if progs[name] != nil {
			t.Errorf("%s loaded with the fexit variant", name)
		}
	}
	cgroupPath, err := checkPrerequisites(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = tr.attachWhere(cgroupPath, func(p *program) bool { return p.kind == kindFexit || p.name == "udp_sock_cookie" })
	for _, l := range tr.links {
		l.Close()
	}
	if err != nil {
		t.Fatalf("the kernel has fexit, but the UDP fexit programs did not attach: %v", err)
	}
	want := 1 // the cookie program
	for _, f := range catalogue {
		if f.kind == kindFexit && (f.recvParams == 0 || f.recvParams == tr.recvParams) && tr.capability("function:"+f.hook) {
			want++
		}
	}
	if n := len(tr.attachments); n != want || want < 3 {
		t.Errorf("%d attachments, want %d (at least 3): %v", n, want, tr.attachments)
	}
}

func TestRecvmsgFlagsArgHere(t *testing.T) {
	arg, params, err := recvmsgFlagsArg()
	if err != nil {
		t.Fatal(err)
	}
	// udp_recvmsg(sk, msg, len, noblock, flags, addr_len) before Linux
	// 5.19, (sk, msg, len, flags, addr_len) since, and without addr_len
	// in newer kernels (6.18 here, 7.2; not 6.12).
	want := uint8(3)
	if v, _ := currentKernelVersion(); v < 5<<16|19<<8 {
		want = 4
	}
	if arg != want || (arg == 4 && params != 6) || (arg == 3 && params != 5 && params != 4) {
		t.Errorf("flags is argument %d of %d, want %d (of 6 before 5.19, else of 5 or 4)", arg, params, want)
	}
}

func TestChooseUDPHook(t *testing.T) {
	caps := func(tp, fe, kp bool) []Capability {
		return []Capability{
			{Name: "tracepoint:sock/sock_send_length", Available: tp, Reason: "not in this kernel (btf_trace_sock_send_length)"},
			{Name: "tracepoint:sock/sock_recv_length", Available: tp, Reason: "not in this kernel (btf_trace_sock_recv_length)"},
			{Name: "fentry", Available: fe, Reason: "loading an fexit program on udp_sendmsg: operation not permitted"},
			{Name: "kprobes", Available: kp, Reason: "no kprobe PMU"},
			{Name: "probe_read_kernel", Available: true},
			{Name: "function:udp_sendmsg", Available: true},
			{Name: "function:udp_recvmsg", Available: true},
		}
	}
	for _, c := range []struct {
		want       string
		tp, fe, kp bool
		failed     string
		hook       string
		errPart    string
	}{
		{UDPHookAuto, true, true, true, "", UDPHookTracepoint, ""},
		{UDPHookAuto, true, false, false, "", UDPHookTracepoint, ""},
		{UDPHookAuto, false, true, true, "", UDPHookFentry, ""},
		{UDPHookAuto, false, false, true, "", UDPHookKprobe, ""},
		{UDPHookAuto, false, true, true, UDPHookFentry, UDPHookKprobe, ""},
		{UDPHookAuto, true, true, true, UDPHookFentry, UDPHookKprobe, ""}, // never back to a better one
		{UDPHookAuto, false, true, true, UDPHookKprobe, "", ""},
		{UDPHookAuto, false, false, false, "", "", ""},
		{UDPHookKprobe, true, true, true, "", UDPHookKprobe, ""},
		{UDPHookFentry, true, true, false, "", UDPHookFentry, ""},
		{UDPHookTracepoint, false, true, true, "", "", "lacks the UDP length tracepoints"},
		{UDPHookKprobe, true, true, false, "", "", "kprobes: no kprobe PMU"},
		{UDPHookFentry, true, false, true, "", "", "fentry: loading an fexit program"},
	} {
		hook, why, err := chooseUDPHook(c.want, caps(c.tp, c.fe, c.kp), c.failed)
		name := fmt.Sprintf("%s tp=%v fentry=%v kp=%v failed=%q", c.want, c.tp, c.fe, c.kp, c.failed)
		if hook != c.hook {
			t.Errorf("%s: hook %q, want %q", name, hook, c.hook)
		}
		if c.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), c.errPart) || !strings.HasPrefix(err.Error(), "UDPHook "+c.want+": ") {
				t.Errorf("%s: error %v, want one naming UDPHook and %q", name, err, c.errPart)
			}
			// A FieldError, for the flag layer to name the flag.
			if fe, ok := err.(*FieldError); !ok || fe.Field != "UDPHook" || fe.Value != c.want {
				t.Errorf("%s: error %#v, want a *FieldError of UDPHook %s", name, err, c.want)
			} else if got := FlagErrors(err); len(got) != 1 || !strings.HasPrefix(got[0], "--tracer.udp-hook="+c.want+": ") {
				t.Errorf("%s: FlagErrors %q, want it to name --tracer.udp-hook=%s", name, got, c.want)
			}
			continue
		}
		if err != nil || why == "" {
			t.Errorf("%s: %v, why %q", name, err, why)
		}
		// auto says why a better hook was not taken.
		if c.failed != "" && !strings.Contains(why, c.failed+" did not load") {
			t.Errorf("%s: why %q does not say %s did not load", name, why, c.failed)
		}
	}
	// lockdown=confidentiality: kprobes exist but cannot read the socket.
	locked := caps(false, false, true)
	locked[4] = Capability{Name: "probe_read_kernel", Reason: "lockdown=confidentiality refuses bpf_probe_read_kernel and kprobes"}
	if hook, why, err := chooseUDPHook(UDPHookAuto, locked, ""); hook != "" || err != nil || !strings.Contains(why, "lockdown") {
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

// Forcing a UDP hook starts with it where the kernel offers it, and stops
// start-up with an error that says why where it does not: every hook, on
// every kernel.
func TestUDPHookForced(t *testing.T) {
	nettest.RequireRoot(t)
	for _, hook := range udpHooks {
		t.Run(hook, func(t *testing.T) {
			possible := UDPHookPossible(hook)
			cfg := NewDefaultConfig()
			cfg.UDPHook = hook
			tr, err := New(cfg, log.NewNopLogger())
			if err == nil {
				defer tr.Close()
			}
			switch {
			case possible == nil && err != nil:
				t.Fatalf("the kernel offers %s, but the tracer did not start with it: %v", hook, err)
			case possible == nil && tr.udpHook != hook:
				t.Errorf("started with UDP hook %q, want %q", tr.udpHook, hook)
			case possible != nil && err == nil:
				t.Fatalf("started with %s, which the kernel does not offer (%v)", hook, possible)
			case possible != nil && !strings.Contains(err.Error(), "UDPHook "+hook+":"):
				t.Errorf("error does not name the setting: %v", err)
			}
			t.Logf("%s: %v", hook, err)
		})
	}
}

// programsWhere lists the catalogue's programs sel selects.
func programsWhere(sel func(*program) bool) []string {
	var out []string
	for i := range catalogue {
		if sel(&catalogue[i]) {
			out = append(out, catalogue[i].name)
		}
	}
	return out
}

// udpTracepointPrograms are the programs of the UDP tracepoint hook.
func udpTracepointPrograms() []string {
	return programsWhere(func(p *program) bool { return p.feature == featureUDP && p.kind == kindTracepoint })
}

// The seed's check; production reads kernelSupport at start-up (New).

// IsTracerSupportedByOS says whether the tracer can run here, and if not,
// what is missing (the seed's check, from capabilities instead of versions).
func IsTracerSupportedByOS() (bool, string) {
	var missing []string
	for _, c := range kernelSupport() {
		if c.Required && !c.Available {
			missing = append(missing, fmt.Sprintf("%s (%s)", c.Name, c.Reason))
		}
	}
	if len(missing) > 0 {
		return false, "missing " + strings.Join(missing, ", ")
	}
	return true, ""
}

func TestChooseTCPIterator(t *testing.T) {
	caps := func(tcp, taskFile, iterTCP bool) []Capability {
		return []Capability{
			{Name: "sk_storage_tracing", Available: tcp, Reason: "Linux 5.11+"},
			{Name: "bpf_sock_from_file", Available: true},
			{Name: "atomic_fetch", Available: true},
			{Name: "task_file_sock_storage", Available: taskFile, Reason: "R1 type=untrusted_ptr_sock expected=sock_common"},
			{Name: "iter_tcp_sock_storage", Available: iterTCP, Reason: "invalid func bpf_sk_storage_get"},
		}
	}
	for _, c := range []struct {
		want                   string
		tcp, taskFile, iterTCP bool
		it                     string
		errPart                string
	}{
		{TCPIteratorAuto, true, true, true, TCPIteratorTaskFile, ""},
		{TCPIteratorAuto, true, false, true, TCPIteratorTCP, ""},
		{TCPIteratorAuto, true, false, false, "", ""},
		{TCPIteratorAuto, false, true, true, "", ""},
		{TCPIteratorTCP, true, true, true, TCPIteratorTCP, ""},
		{TCPIteratorTaskFile, true, true, false, TCPIteratorTaskFile, ""},
		{TCPIteratorTaskFile, true, false, true, "", "task_file_sock_storage: R1 type=untrusted_ptr_sock"},
		{TCPIteratorTCP, true, true, false, "", "iter_tcp_sock_storage: invalid func"},
		// No TCP at all (before 5.12): not traced in auto mode; a forced
		// iterator stops start-up, as a forced UDP hook.
		{TCPIteratorTCP, false, true, true, "", "this kernel cannot trace TCP: sk_storage_tracing"},
	} {
		name := fmt.Sprintf("%s tcp=%v task_file=%v iter/tcp=%v", c.want, c.tcp, c.taskFile, c.iterTCP)
		it, missing, err := chooseTCPIterator(c.want, caps(c.tcp, c.taskFile, c.iterTCP))
		if it != c.it {
			t.Errorf("%s: %q, want %q", name, it, c.it)
		}
		if it == "" && len(missing) == 0 {
			t.Errorf("%s: none, and nothing said missing", name)
		}
		if c.errPart == "" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.errPart) {
			t.Errorf("%s: error %v, want one saying %q", name, err, c.errPart)
		} else if got := FlagErrors(err); len(got) != 1 || !strings.HasPrefix(got[0], "--tracer.tcp-iterator="+c.want+": ") {
			t.Errorf("%s: FlagErrors %q, want it to name --tracer.tcp-iterator=%s", name, got, c.want)
		}
	}
}
