package tracer

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/go-kit/log/level"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// load rewrites the embedded object for this configuration and kernel (its
// settings, the sizes of its maps, the programs of the catalogue it wants,
// the kernel filters) and loads it; when the UDP hook auto chose does not
// load, the next one.
func (t *Tracer) load() error {
	spec, err := bpf.LoadConntrace()
	if err != nil {
		return fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	if err := spec.Variables["udp_idle_ns"].Set(uint64(t.cfg.UDPConnTimeout.Nanoseconds())); err != nil {
		return fmt.Errorf("setting udp_idle_ns: %w", err)
	}
	if err := spec.Variables["max_tracked"].Set(t.cfg.MaxTrackedConnections); err != nil {
		return fmt.Errorf("setting max_tracked: %w", err)
	}
	// The SYN table's hash key: whoever sends SYNs cannot know which
	// slots their SYNs take (see syn_hash).
	var seed [4]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return fmt.Errorf("a random seed for the SYN table: %w", err)
	}
	t.synSeed = binary.NativeEndian.Uint32(seed[:])
	if err := spec.Variables["syn_seed"].Set(t.synSeed); err != nil {
		return fmt.Errorf("setting syn_seed: %w", err)
	}
	version, err := currentKernelVersion()
	if err != nil {
		return err
	}
	for name, on := range map[string]bool{
		"collect_ipv6":  t.cfg.CollectIPv6Conns,
		"collect_udp":   t.cfg.CollectUDPConns,
		"dns_on":        t.cfg.DNSInspection,
		"time_incoming": t.cfg.IncomingHandshakes,
		// What the RTT callback passes (see conntrace.c): known from
		// the version only.
		"rtt_sample_arg": version >= kernelRTTSampleArg,
	} {
		flag := uint8(0) // the BPF side reads a __u8
		if on {
			flag = 1
		}
		if err := spec.Variables[name].Set(flag); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	if t.readsUDPCookies() {
		arg, params, err := recvmsgFlagsArg()
		if err != nil {
			return fmt.Errorf("the UDP %s programs need udp_recvmsg's arguments: %w", t.udpHook, err)
		}
		t.recvParams = params
		if t.udpHook == UDPHookFentry && !slices.ContainsFunc(catalogue, func(p program) bool { return p.recvParams == params }) {
			level.Warn(t.logger).Log("msg", "received UDP bytes are not counted: no fexit program for this kernel's udp_recvmsg", "arguments", params)
		}
		if err := spec.Variables["recvmsg_flags_arg"].Set(arg); err != nil {
			return fmt.Errorf("setting recvmsg_flags_arg: %w", err)
		}
	}
	if err := t.keepWanted(spec); err != nil {
		return err
	}
	spec.Maps["closed_conns"].MaxEntries = t.cfg.ClosedRingBufferBytes
	if !t.cfg.IncomingHandshakes {
		spec.Maps["syn_times"].MaxEntries = 1 // not timed: no 512 KiB table
	}
	spec.Maps["udp_flows"].MaxEntries = t.cfg.MaxTrackedConnections
	if err := t.cgroupSpec(spec); err != nil {
		return err
	}
	tables, err := t.kernelFilters(spec)
	if err != nil {
		return err
	}
	opts := &ebpf.CollectionOptions{}
	if t.cfg.BPFDebug {
		opts.Programs.LogLevel = ebpf.LogLevelInstruction
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, *opts)
	if err != nil && t.udpHook != UDPHookTracepoint && t.udpHook != "" && t.cfg.UDPHook == UDPHookAuto {
		// A fallback was chosen, not asked for: the next one, or
		// without UDP; the tracer still runs.
		hook, why, _ := chooseUDPHook(UDPHookAuto, t.support, t.udpHook)
		level.Warn(t.logger).Log("msg", "the UDP "+t.udpHook+" programs did not load", "err", err, "next", hook, "why", why)
		t.udpHook = hook
		if hook == "" {
			t.cfg.CollectUDPConns = false
			if !t.cfg.CollectTCPConns {
				return fmt.Errorf("nothing to trace: TCP is not possible on this kernel, and the UDP programs did not load: %w", err)
			}
		}
		return t.load()
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("the kernel's verifier refused a BPF program: %+v", ve)
		}
		return fmt.Errorf("loading the BPF programs and maps: %w", err)
	}
	err = assignLoaded(coll, &t.objs)
	coll.Close() // closes only what was not handed over
	if err != nil {
		t.objs.Close()
		return fmt.Errorf("taking the loaded BPF objects: %w", err)
	}
	if err := t.fillFilters(tables); err != nil {
		t.objs.Close()
		return err
	}
	return nil
}

// keepWanted removes from spec the programs of the catalogue this
// configuration and kernel do not load: a program for a hook the kernel
// lacks would not pass its verifier.
func (t *Tracer) keepWanted(spec *ebpf.CollectionSpec) error {
	inCatalogue := make(map[string]bool, len(catalogue))
	for i := range catalogue {
		p := &catalogue[i]
		inCatalogue[p.name] = true
		if !t.loads(p) {
			delete(spec.Programs, p.name)
		}
	}
	for name := range spec.Programs {
		if !inCatalogue[name] {
			return fmt.Errorf("program %s of the BPF object is not in the catalogue (tracer/catalogue.go)", name)
		}
	}
	return nil
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
// objs; programs that were not loaded (keepWanted) stay nil.
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

// programs maps program names to the loaded programs.
func (t *Tracer) programs() map[string]*ebpf.Program {
	return programsByName(&t.objs.ConntracePrograms)
}
