package tracer

import (
	"testing"

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
	for name, prog := range spec.Programs {
		one := *spec
		one.Programs = map[string]*ebpf.ProgramSpec{name: prog}
		coll, err := ebpf.NewCollection(&one)
		if err != nil {
			t.Errorf("%s (%s): %v", name, prog.SectionName, err)
			continue
		}
		coll.Close()
	}
}
