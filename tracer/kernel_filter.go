package tracer

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/go-kit/log/level"

	"github.com/conntrace/conntrace_exporter/bpf"
	"github.com/conntrace/conntrace_exporter/filter"
)

// The kernel's map value holds filter.MaxKernelRanges ranges: a constant
// index out of range fails to compile when the two differ.
var (
	_ = [1]struct{}{}[len(bpf.ConntraceFilterPorts{}.Ranges)-filter.MaxKernelRanges]
	_ = [1]struct{}{}[filter.MaxKernelRanges-len(bpf.ConntraceFilterPorts{}.Ranges)]
)

// kernelFilters prepares the filters for the kernel: with tables, the
// tracer never tracks a filtered connection (one trie lookup per new
// connection or flow, see bpf/filter.h); when the filters cannot be
// expressed there (too many port ranges under one prefix), it filters in
// user space instead, after the kernel counted the traffic.
func (t *Tracer) kernelFilters(spec *ebpf.CollectionSpec) (*filter.KernelFilterTables, error) {
	f := t.cfg.Filters
	if f == nil || (len(f.ExcludedSource)+len(f.ExcludedDestination)+len(f.IncludedSource)+len(f.IncludedDestination)) == 0 {
		return nil, nil
	}
	tables, err := f.KernelTables()
	if err != nil {
		level.Warn(t.logger).Log("msg", "connection filters too large for the kernel: filtering in user space, after counting", "err", err)
		t.userFilter = true
		return nil, nil
	}
	if err := spec.Variables["filters_on"].Set(uint8(1)); err != nil {
		return nil, fmt.Errorf("setting filters_on: %w", err)
	}
	includes := uint8(0)
	if len(f.IncludedSource)+len(f.IncludedDestination) > 0 {
		includes = 1
	}
	if err := spec.Variables["includes_on"].Set(includes); err != nil {
		return nil, fmt.Errorf("setting includes_on: %w", err)
	}
	for name, n := range map[string]int{
		"excluded_source": len(tables.ExcludedSource), "excluded_destination": len(tables.ExcludedDestination),
		"included_source": len(tables.IncludedSource), "included_destination": len(tables.IncludedDestination),
	} {
		spec.Maps[name].MaxEntries = uint32(max(n, 1))
	}
	return tables, nil
}

// fillFilters writes the tables into the loaded tries.
func (t *Tracer) fillFilters(tables *filter.KernelFilterTables) error {
	if tables == nil {
		return nil
	}
	for _, tr := range []struct {
		m       *ebpf.Map
		name    string
		entries []filter.KernelFilterEntry
	}{
		{t.objs.ExcludedSource, "excluded_source", tables.ExcludedSource},
		{t.objs.ExcludedDestination, "excluded_destination", tables.ExcludedDestination},
		{t.objs.IncludedSource, "included_source", tables.IncludedSource},
		{t.objs.IncludedDestination, "included_destination", tables.IncludedDestination},
	} {
		for _, e := range tr.entries {
			key, val := filterEntry(e)
			if err := tr.m.Put(&key, &val); err != nil {
				return fmt.Errorf("loading filter %s into %s: %w", e.Prefix, tr.name, err)
			}
		}
	}
	return nil
}

func filterEntry(e filter.KernelFilterEntry) (bpf.ConntraceFilterKey, bpf.ConntraceFilterPorts) {
	key := bpf.ConntraceFilterKey{Prefixlen: uint32(8 + e.Prefix.Bits()), Family: afInet}
	a := e.Prefix.Addr()
	if a.Is4() {
		b := a.As4()
		copy(key.Addr[:], b[:])
	} else {
		key.Family = afInet6
		key.Addr = a.As16()
	}
	var val bpf.ConntraceFilterPorts
	val.AllTcp, val.AllUdp = b2u(e.AllTCP), b2u(e.AllUDP)
	val.Nranges = uint8(len(e.Ranges))
	for i, r := range e.Ranges {
		val.Ranges[i].Lo, val.Ranges[i].Hi = r.Lo, r.Hi
		val.Ranges[i].Tcp, val.Ranges[i].Udp = b2u(r.TCP), b2u(r.UDP)
	}
	return key, val
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
