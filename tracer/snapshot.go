package tracer

import (
	"fmt"
	"time"

	"github.com/conntrace/conntrace_exporter/bpf"
	"golang.org/x/sys/unix"
)

// Snapshot is one read of the live connections: every tracked TCP
// connection and UDP flow, with Monotonic filled (their totals since the
// tracer first saw them). The connections that leave are not in it: they go
// to the Sink.
type Snapshot struct {
	Conns []ConnectionStats
	// Leaving are connections that left (closed) but are not given to the
	// sink yet (they wait for a conntrack dump to find their NAT), of
	// those a read had reported live: a client that counted one live keeps
	// counting it from here (its final counters), so that nothing it
	// counted goes down meanwhile.
	Leaving []ConnectionStats
	// ReadStart and ReadEnd bound the read, in kernel time
	// (CLOCK_MONOTONIC ns, as the connections' epochs).
	ReadStart, ReadEnd uint64
}

// KTime returns the kernel's bpf_ktime_get_ns clock (CLOCK_MONOTONIC) now.
func (t *Tracer) KTime() uint64 { return ktimeNow() }

// Snapshot reads the live connections, with their NAT; then it drains the
// closed connections, so that what closed during the read reaches the
// sink before the snapshot is returned.
//
// The order matters: after the read, the drain gives the sink (or natWait)
// everything that closed before it, and only then is natWait copied into
// Leaving, so that a connection that closed is in the snapshot, in Leaving,
// or given to the sink before the snapshot is returned.
func (t *Tracer) Snapshot() (*Snapshot, error) {
	now := time.Now()
	t.mu.Lock()
	snap := &Snapshot{ReadStart: ktimeNow()}
	conns, err := t.readAll(now)
	if t.afterRead != nil {
		t.afterRead()
	}
	snap.ReadEnd = ktimeNow()
	t.mu.Unlock()
	t.drainClosed()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	snap.Leaving = t.translate(conns, now)
	t.mu.Unlock()
	snap.Conns = conns
	return snap, nil
}

// readActive runs the iterator: the live counters of every tracked socket a
// process holds, read now, completed by the last values of the others.
// Callers hold t.mu.
func (t *Tracer) readActive(now time.Time) ([]ConnectionStats, error) {
	if t.dumpIter == nil {
		return nil, nil // no TCP
	}
	// The records are decoded as the iterator writes them, and those kept
	// are clamped by known after it ran: known's lock is never held
	// during an iterator run (the drain takes it).
	conns := make([]ConnectionStats, 0, t.lastRead+t.lastRead/8)
	stream := recordStream{each: func(r *bpf.ConntraceConnRecord) {
		if c := toConnectionStats(r, t.comms); t.keep(&c) {
			conns = append(conns, c)
		}
	}}
	t.kmu.Lock()
	t.known.startRead()
	t.kmu.Unlock()
	if err := t.readIterator(t.dumpIter, t.tcpIter == tcpIterTCP, &stream); err != nil {
		t.kmu.Lock()
		t.known.abortRead()
		t.kmu.Unlock()
		return nil, fmt.Errorf("reading the connection iterator: %w", err)
	}
	if err := stream.end(); err != nil {
		t.kmu.Lock()
		t.known.abortRead()
		t.kmu.Unlock()
		t.decode.Add(1)
		return nil, err
	}
	t.lastRead = len(conns)
	t.kmu.Lock()
	t.known.beginRead()
	live := conns[:0]
	for i := range conns {
		if t.known.live(&conns[i], now) {
			live = append(live, conns[i])
		}
	}
	conns = live
	conns, expired := t.known.endRead(conns, now, t.cfg.TCPConnTimeout)
	t.kmu.Unlock()
	if t.wanted() {
		t.emit(expired)
	}
	return conns, nil
}

// readAll reads every TCP connection and UDP flow and marks those whose
// other end is here too. Callers hold t.mu.
func (t *Tracer) readAll(now time.Time) ([]ConnectionStats, error) {
	conns, err := t.readActive(now)
	if err != nil {
		return nil, err
	}
	if conns, err = t.readUDP(conns, ktimeNow()); err != nil {
		return nil, err
	}
	if t.intraEnds == nil {
		t.intraEnds = make(map[endpointKey]struct{}, len(conns))
	}
	markIntraHostWith(conns, t.intraEnds)
	t.syncPorts(conns)
	return conns, nil
}

// ktimeNow is the kernel's bpf_ktime_get_ns clock (CLOCK_MONOTONIC) now.
func ktimeNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("CLOCK_MONOTONIC: %v", err)) // cannot fail on Linux
	}
	return uint64(ts.Nano())
}
