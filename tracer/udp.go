package tracer

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// udpKeyBit marks the ConnKey of a UDP flow: its Cookie is the flow's id
// with this bit set. Socket cookies are a 64-bit counter from 1 and never
// reach it, so TCP and UDP keys cannot collide.
const udpKeyBit = 1 << 63

const udpBatch = 4096

// udpReader reads the UDP flow map. Its buffers are reused (under Tracer.mu).
type udpReader struct {
	keys  []bpf.ConntraceUdpKey
	vals  []bpf.ConntraceUdpFlow
	flows int // flows open at the last read
	// live holds the flows of the last snapshot (read with live set):
	// the snapshot points into it until released (Tracer.snapMu).
	live []ConnectionStats
}

// readUDP appends the UDP flows to conns when live is set (a snapshot's
// read: callers hold t.snapMu), and closes those idle for longer than
// UDPConnTimeout: each is removed from the kernel map atomically with its
// final counters and reported as closed, once. Callers hold t.mu.
func (t *Tracer) readUDP(conns []*ConnectionStats, ktimeNow uint64, live bool) ([]*ConnectionStats, error) {
	if t.objs.UdpFlows == nil {
		return conns, nil
	}
	r := &t.udp
	if r.keys == nil {
		r.keys = make([]bpf.ConntraceUdpKey, udpBatch)
		r.vals = make([]bpf.ConntraceUdpFlow, udpBatch)
	}
	timeout := uint64(t.cfg.UDPConnTimeout.Nanoseconds())
	var idle []bpf.ConntraceUdpKey
	var cursor ebpf.MapBatchCursor
	r.flows = 0
	if live {
		r.live = r.live[:0]
	}
	for {
		n, err := t.objs.UdpFlows.BatchLookup(&cursor, r.keys, r.vals, nil)
		for i := 0; i < n; i++ {
			v := &r.vals[i]
			if ktimeNow > v.LastNs && ktimeNow-v.LastNs > timeout {
				idle = append(idle, r.keys[i])
				continue
			}
			r.flows++
			if !live {
				continue
			}
			if c := t.udpStats(&r.keys[i], v, false); t.keep(&c) {
				r.live = append(r.live, c)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return conns, fmt.Errorf("reading the UDP flows: %w", err)
		}
	}
	if live {
		// Pointers once the buffer is whole (an append may move it).
		for i := range r.live {
			conns = append(conns, &r.live[i])
		}
	}
	var gone []ConnectionStats
	for i := range idle {
		var v bpf.ConntraceUdpFlow
		if err := t.objs.UdpFlows.LookupAndDelete(&idle[i], &v); err != nil {
			continue // gone meanwhile
		}
		c := t.udpStats(&idle[i], &v, true)
		c.LastUpdateEpoch = ktimeNow
		if t.keep(&c) {
			gone = append(gone, c)
		}
	}
	if t.wanted() {
		t.emit(gone)
	}
	return conns, nil
}

func (t *Tracer) udpStats(k *bpf.ConntraceUdpKey, v *bpf.ConntraceUdpFlow, closed bool) ConnectionStats {
	c := ConnectionStats{
		Monotonic:       Counters{SentBytes: v.SentBytes, RecvBytes: v.RecvBytes},
		LastUpdateEpoch: v.LastNs,
		StartEpoch:      v.StartNs,
		Pid:             v.Pid,
		Comm:            t.comms.get(v.Comm),
		NetNS:           v.Netns,
		Cgroup:          v.Cgroup,
		SPort:           v.Sport,
		DPort:           k.Rport,
		Type:            UDP,
		Key:             ConnKey{Cookie: udpKeyBit | v.Id},
		Established:     true,
		Closed:          closed,
		Direction:       NONE,
	}
	if v.Direction == dirIncoming {
		c.Direction = INCOMING
	}
	c.Family, c.Source, c.Dest = endpoints(k.Family, &v.Laddr, &k.Raddr)
	c.classifyDirection()
	return c
}

// udpSweepEvery is how often idle UDP flows are closed between scrapes.
func udpSweepEvery(timeout time.Duration) time.Duration {
	return min(max(timeout/4, time.Second), 10*time.Second)
}
