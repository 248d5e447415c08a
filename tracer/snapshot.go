package tracer

import (
	"fmt"
	"sync"
	"time"

	"github.com/conntrace/conntrace_exporter/bpf"
	"golang.org/x/sys/unix"
)

// Snapshot is one read of the live connections: every tracked TCP
// connection and UDP flow, with Monotonic filled (their totals since the
// tracer first saw them). The connections that leave are not in it: they go
// to the Sink.
//
// Conns point into the tracer's own state (one copy of each connection,
// not one per read): the next read writes there, so a read waits until the
// previous snapshot is released, and a snapshot must be released (Release)
// once its user is done with it.
type Snapshot struct {
	Conns []*ConnectionStats
	// Leaving are connections that left (closed) but are not given to the
	// sink yet (they wait for a conntrack dump to find their NAT), of
	// those a read had reported live: a client that counted one live keeps
	// counting it from here (its final counters), so that nothing it
	// counted goes down meanwhile.
	Leaving []ConnectionStats
	// ReadStart and ReadEnd bound the read, in kernel time
	// (CLOCK_MONOTONIC ns, as the connections' epochs).
	ReadStart, ReadEnd uint64

	release *releaser
}

// releaser runs a snapshot's release once, however many copies of the
// snapshot call it, and however concurrently: a second unlock of the
// tracer's read lock would unlock the next read's.
type releaser struct {
	once sync.Once
	fn   func()
}

// NewSnapshot returns a snapshot of conns whose Release calls release
// (nil: nothing) once: for sources other than the tracer (tests' fakes).
func NewSnapshot(conns []*ConnectionStats, release func()) *Snapshot {
	s := &Snapshot{Conns: conns}
	if release != nil {
		s.release = &releaser{fn: release}
	}
	return s
}

// Release ends the use of the snapshot's Conns, and lets the next read
// begin. Calling it again does nothing; a snapshot made by hand has nothing
// to release.
func (s *Snapshot) Release() {
	if r := s.release; r != nil {
		r.once.Do(r.fn)
	}
}

// KTime returns the kernel's bpf_ktime_get_ns clock (CLOCK_MONOTONIC) now.
func (t *Tracer) KTime() uint64 { return ktimeNow() }

// Snapshot reads the live connections, with their NAT; then it drains the
// closed connections, so that what closed during the read reaches the
// sink before the snapshot is returned. It waits for the release of the
// previous snapshot.
//
// The order matters: after the read, the drain gives the sink (or natWait)
// everything that closed before it, and only then is natWait copied into
// Leaving, so that a connection that closed is in the snapshot, in Leaving,
// or given to the sink before the snapshot is returned.
func (t *Tracer) Snapshot() (*Snapshot, error) {
	now := time.Now()
	t.snapMu.Lock()
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
		t.snapMu.Unlock()
		return nil, err
	}
	t.mu.Lock()
	snap.Leaving = t.translate(conns, now)
	t.mu.Unlock()
	snap.Conns = conns
	snap.release = &releaser{fn: t.releaseSnapshot}
	return snap, nil
}

// releaseSnapshot lets the next read begin. What the snapshot pointed at
// is dropped from the reused arrays first: if no read comes (nobody
// scrapes), the entries of the connections closed since must not stay
// reachable from them.
func (t *Tracer) releaseSnapshot() {
	t.dropReadRefs()
	t.snapMu.Unlock()
}

// dropReadRefs empties the arrays a read reuses, keeping their capacity.
// Callers hold snapMu.
func (t *Tracer) dropReadRefs() {
	clear(t.snapConns[:cap(t.snapConns)])
	t.snapConns = t.snapConns[:0]
	clear(t.udp.live)
	t.udp.live = t.udp.live[:0]
}

// readActive runs the iterator: the live counters of every tracked socket a
// process holds, read now, completed by the last values of the others.
// Each record is clamped by known as it is decoded, and kept there: the
// read returns pointers to known's entries (at 200,000 sockets, a slice of
// the records cost 71 MB more, BENCHMARKS.md §13). known's lock is taken
// per record, never for a whole iterator run (the drain takes it). A read
// that fails has clamped into known the records before its error: they
// are the kernel's values, so nothing is counted twice.
// Callers hold snapMu and t.mu.
func (t *Tracer) readActive(now time.Time) ([]*ConnectionStats, error) {
	conns := t.snapConns[:0]
	if t.dumpIter == nil {
		return conns, nil // no TCP
	}
	t.kmu.Lock()
	t.known.startRead()
	t.known.beginRead()
	t.kmu.Unlock()
	stream := recordStream{each: func(r *bpf.ConntraceConnRecord) {
		c := toConnectionStats(r, t.comms)
		if !t.keep(&c) {
			return
		}
		t.kmu.Lock()
		p := t.known.live(&c, now)
		t.kmu.Unlock()
		if p != nil {
			conns = append(conns, p)
		}
	}}
	err := t.readIterator(t.dumpIter, t.tcpIter == TCPIteratorTCP, &stream)
	if err == nil {
		if err = stream.end(); err != nil {
			t.decode.Add(1)
		}
	} else {
		err = fmt.Errorf("reading the connection iterator: %w", err)
	}
	t.kmu.Lock()
	if err != nil {
		t.known.abortRead()
		t.kmu.Unlock()
		return nil, err
	}
	conns, expired := t.known.endRead(conns, now, t.cfg.TCPConnTimeout)
	t.kmu.Unlock()
	if t.wanted() {
		t.emit(expired)
	}
	return conns, nil
}

// readAll reads every TCP connection and UDP flow and marks those whose
// other end is here too. Callers hold snapMu and t.mu.
func (t *Tracer) readAll(now time.Time) ([]*ConnectionStats, error) {
	conns, err := t.readActive(now)
	if err != nil {
		return nil, err
	}
	if conns, err = t.readUDP(conns, ktimeNow(), true); err != nil {
		return nil, err
	}
	t.snapConns = conns // its array, for the next read
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
