package tracer

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/go-kit/log/level"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// resetNoSocketCap says whether the kernel calls tcp_send_reset for
// segments no connection took (no socket, a listener's, a time-wait or a
// request socket's): Linux 6.10 made it do so, in the change that gave the
// tracepoint its third argument, the reset's reason. Before, it fires for
// full sockets only, and those resets are not seen.
func resetNoSocketCap(spec *btf.Spec, specErr error) Capability {
	c := Capability{Name: "tcp_send_reset_no_socket",
		Costs: "conntrace_resets_no_connection_total (resets for segments no connection took; Linux 6.10+)"}
	if specErr != nil {
		c.Reason = specErr.Error()
		return c
	}
	params, err := tracepointParams(spec, "btf_trace_tcp_send_reset")
	switch {
	case err != nil:
		c.Reason = err.Error()
	case params < 4: // ctx, sk, skb, reason
		c.Reason = "Linux 6.10 or later (tcp_send_reset fires for full sockets only before)"
	default:
		c.Available = true
	}
	return c
}

// tracepointParams is the number of parameters of a BTF tracepoint's
// function type (its typedef points to the prototype; the first parameter
// is the context).
func tracepointParams(spec *btf.Spec, name string) (int, error) {
	var td *btf.Typedef
	if err := spec.TypeByName(name, &td); err != nil {
		return 0, fmt.Errorf("not in this kernel (%s)", name)
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return 0, fmt.Errorf("%s is a %T, not a pointer to a function", name, td.Type)
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok {
		return 0, fmt.Errorf("%s points to a %T, not a function", name, ptr.Target)
	}
	return len(proto.Params), nil
}

// PortResets are the resets this host sent on one local port for segments
// no connection took: no socket there (a port nothing listens on), or a
// listener's, a time-wait or a request socket's.
type PortResets struct {
	NetNS  uint32
	Port   uint16
	Resets uint64
}

// PortResetIdle is how long a port's entry in the kernel's table of resets
// without a connection stays after its last reset: then it is deleted, so
// that a port scan, or the ports of namespaces gone, do not hold the
// table's 4,096 entries for good. Its count is kept here (retired), and
// added back when the port resets again.
const PortResetIdle = 30 * time.Minute

// maxRetiredPorts bounds the counts kept of deleted entries (16 bytes
// each); past it the oldest is forgotten, and that port's count starts
// again from its next reset (a counter reset).
const maxRetiredPorts = 16384

// portSeen is when a port's count last moved.
type portSeen struct {
	n  uint64
	at time.Time
}

// portAges is what PortResets remembers between reads: when each port's
// kernel count last moved, and the counts of deleted entries, oldest
// first in order.
type portAges struct {
	seen    map[bpf.ConntraceListenerKey]portSeen
	retired map[bpf.ConntraceListenerKey]uint64
	order   []bpf.ConntraceListenerKey
}

// PortResets reads the resets without a connection, per (namespace,
// port), sorted; ok false where the kernel does not show them (before
// Linux 6.10) or TCP is not traced. Those the kernel's table had no room
// for are counted in Stats.Lost (LostPortResetsFull). Ports without a
// reset for PortResetIdle are deleted here.
func (t *Tracer) PortResets() (resets []PortResets, ok bool, err error) {
	if t.objs.HandleResetNoConn == nil || t.objs.PortResets == nil {
		return nil, false, nil
	}
	t.portMu.Lock()
	defer t.portMu.Unlock()
	now := time.Now()
	var read []portCount
	var pc portCount
	it := t.objs.PortResets.Iterate()
	for it.Next(&pc.key, &pc.n) {
		read = append(read, pc)
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return nil, true, fmt.Errorf("reading the resets per port (port_resets): %w", err)
	}
	resets, idle := t.resetPorts.age(read, now)
	for _, pc := range idle {
		// A reset counted between the read and the delete is lost with
		// the entry: a port idle for half an hour. Its count is kept
		// only once the entry is gone (else the next read would see it
		// again, and count it twice).
		if err := t.objs.PortResets.Delete(pc.key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			level.Warn(t.logger).Log("msg", "deleting an idle port's resets", "port", pc.key.Port, "err", err)
			continue
		}
		t.resetPorts.retire(pc.key, pc.n)
	}
	sort.Slice(resets, func(i, j int) bool {
		if resets[i].NetNS != resets[j].NetNS {
			return resets[i].NetNS < resets[j].NetNS
		}
		return resets[i].Port < resets[j].Port
	})
	return resets, true, nil
}

// portCount is one entry of the kernel's port_resets.
type portCount struct {
	key bpf.ConntraceListenerKey
	n   uint64
}

// age notes when each port's count moved, and returns the ports to
// export (their count, plus what was retired of them) and those idle past
// PortResetIdle (to delete from the kernel, then retire).
func (p *portAges) age(read []portCount, now time.Time) (keep []PortResets, idle []portCount) {
	if p.seen == nil {
		p.seen = map[bpf.ConntraceListenerKey]portSeen{}
		p.retired = map[bpf.ConntraceListenerKey]uint64{}
	}
	in := make(map[bpf.ConntraceListenerKey]bool, len(read))
	for _, r := range read {
		in[r.key] = true
		if s, known := p.seen[r.key]; !known || s.n != r.n {
			p.seen[r.key] = portSeen{r.n, now}
		} else if now.Sub(s.at) > PortResetIdle {
			idle = append(idle, r)
			delete(p.seen, r.key)
			continue
		}
		keep = append(keep, PortResets{NetNS: r.key.Netns, Port: r.key.Port, Resets: p.retired[r.key] + r.n})
	}
	for k := range p.seen {
		if !in[k] {
			delete(p.seen, k)
		}
	}
	return keep, idle
}

// retire keeps n more resets of key, whose kernel entry went: last in
// order (the least recently retired go first), and never a port whose
// entry is back in the kernel (its exported count holds the retired).
func (p *portAges) retire(key bpf.ConntraceListenerKey, n uint64) {
	if _, ok := p.retired[key]; ok {
		p.order = slices.DeleteFunc(p.order, func(k bpf.ConntraceListenerKey) bool { return k == key })
	} else if len(p.order) >= maxRetiredPorts {
		if i := slices.IndexFunc(p.order, func(k bpf.ConntraceListenerKey) bool { _, live := p.seen[k]; return !live }); i >= 0 {
			delete(p.retired, p.order[i])
			p.order = slices.Delete(p.order, i, i+1)
		}
	}
	p.order = append(p.order, key)
	p.retired[key] += n
}
