package tracer

import (
	"errors"
	"maps"
	"os"
	"slices"
	"time"
	"unsafe"

	"github.com/go-kit/log/level"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// Sink receives the connections that leave the tracer: closed ones (Closed
// set, their final counters) and those it stops reporting without a close
// (their close record was lost, or a UDP flow went idle before the kernel
// said so: their last counters; a later record of one counts only what is
// new). netstate.State is the real one.
type Sink interface {
	Closed(conns []ConnectionStats)
	// Clients says how many clients the sink counts for: with none, what
	// leaves is dropped at once (a new client gets what leaves after it).
	Clients() int
}

type sinkBox struct{ Sink }

// SetSink sets where the connections that leave go. Until one is set they
// are counted nowhere (nobody scrapes yet: a client only gets what leaves
// after its first scrape).
func (t *Tracer) SetSink(s Sink) { t.sink.Store(&sinkBox{s}) }

// emit gives conns to the sink.
func (t *Tracer) emit(conns []ConnectionStats) {
	if len(conns) == 0 {
		return
	}
	if b := t.sink.Load(); b != nil {
		b.Closed(conns)
	}
}

// wanted says whether a sink counts what leaves.
func (t *Tracer) wanted() bool {
	b := t.sink.Load()
	return b != nil && b.Clients() > 0
}

// drainInterval is how often closed connections are moved from the ring
// buffer to the sink. The kernel side never wakes user space up (a wakeup
// costs as much as the rest of the program), so this bounds the ring's
// fill: 8 MiB hold 32,768 records, 327,680 closes/s (BENCHMARKS.md).
const drainInterval = 100 * time.Millisecond

// drainLoop drains the ring buffers every drainInterval until Close. It
// never waits for a read or a dump: it takes only drainMu, kmu (held by a
// read only while it clamps records) and, if free, ctMu.
func (t *Tracer) drainLoop() {
	defer t.loops.Done()
	tick := time.NewTicker(drainInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.drainClosed()
		}
	}
}

// natCheckEvery is how often the sweep looks whether the closed
// connections waiting for their NAT are due (see flushNAT). A dump walks
// the whole conntrack table (BENCHMARKS.md: at 6,000 closes a second,
// dumps every second were 40 % of the exporter's CPU).
const natCheckEvery = time.Second

// sweepLoop, until Close, closes idle UDP flows, forgets what only served
// reads, and gives the closed connections waiting for their NAT after a
// dump, even when nobody scrapes: memory stays bounded without scrapes.
func (t *Tracer) sweepLoop() {
	defer t.loops.Done()
	sweep := time.NewTicker(udpSweepEvery(t.cfg.UDPConnTimeout))
	defer sweep.Stop()
	nat := time.NewTicker(natCheckEvery)
	defer nat.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-nat.C:
			if !t.wanted() {
				t.natMu.Lock()
				t.natWait, t.natSpare = nil, nil // nobody to give them to
				t.natMu.Unlock()
				continue
			}
			t.mu.Lock()
			t.flushNAT(time.Now())
			t.mu.Unlock()
		case <-sweep.C:
			now := time.Now()
			t.mu.Lock()
			if _, err := t.readUDP(nil, ktimeNow()); err != nil {
				level.Warn(t.logger).Log("msg", "sweeping idle UDP flows", "err", err)
			}
			t.mu.Unlock()
			t.kmu.Lock()
			t.known.prune(now, t.cfg.TCPConnTimeout)
			t.kmu.Unlock()
			if t.dns != nil {
				t.dns.expire(now)
			}
		}
	}
}

// drainDNS parses the DNS answers in their ring buffer. Callers hold
// drainMu.
func (t *Tracer) drainDNS() {
	if t.dnsRd == nil {
		return
	}
	t.dnsRd.SetDeadline(time.Unix(1, 0))
	now := time.Now()
	for {
		if err := t.dnsRd.ReadInto(&t.drainRec); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				level.Warn(t.logger).Log("msg", "reading the DNS ring buffer", "err", err)
			}
			return
		}
		var ev bpf.ConntraceDnsEvent
		if len(t.drainRec.RawSample) < int(unsafe.Sizeof(ev)) {
			t.decode.Add(1)
			continue
		}
		ev = *(*bpf.ConntraceDnsEvent)(unsafe.Pointer(&t.drainRec.RawSample[0]))
		n := min(int(ev.Len), len(ev.Data))
		t.dns.handle(ev.Data[:n], ev.Truncated != 0, now)
	}
}

// drainBatch bounds the closed connections given to the sink at once.
const drainBatch = 1024

// drainClosed moves every closed connection in the ring buffer to the
// sink, its NAT set when known (else it waits in natWait for the next
// dump).
func (t *Tracer) drainClosed() {
	t.drainMu.Lock()
	defer t.drainMu.Unlock()
	t.drainDNS()
	// A deadline in the past: read what is there, never wait.
	t.closedRd.SetDeadline(time.Unix(1, 0))
	now := time.Now()
	batch := t.drainBuf[:0]
	defer func() { t.drainBuf = batch[:0] }()
	for {
		err := t.closedRd.ReadInto(&t.drainRec)
		if err == nil {
			batch = t.takeRecord(batch, t.drainRec.RawSample)
			if len(batch) < drainBatch {
				continue
			}
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			level.Warn(t.logger).Log("msg", "reading the closed-connection ring buffer", "err", err)
		}
		t.settle(batch, now)
		if err != nil {
			return
		}
		batch = batch[:0]
	}
}

// takeRecord decodes one closed-connection record and appends it to batch
// if it is traced. Callers hold drainMu.
func (t *Tracer) takeRecord(batch []ConnectionStats, raw []byte) []ConnectionStats {
	recs, err := decodeRecords(t.drainOne[:], raw)
	if err != nil || len(recs) != 1 {
		t.decode.Add(1)
		level.Warn(t.logger).Log("msg", "undecodable closed-connection record", "bytes", len(raw), "err", err)
		return batch
	}
	if c := toConnectionStats(&recs[0], t.drainComms); t.keep(&c) {
		batch = append(batch, c)
	}
	return batch
}

// settle marks a batch of closed connections closed in known and gives
// them to the sink, with their NAT where known (see withNAT).
func (t *Tracer) settle(batch []ConnectionStats, now time.Time) {
	if len(batch) == 0 {
		return
	}
	t.kmu.Lock()
	for i := range batch {
		t.known.closed(&batch[i], now)
	}
	t.kmu.Unlock()
	if t.wanted() {
		t.emit(t.withNAT(batch))
	}
}

// withNAT sets the NAT of the closed connections whose translation is
// known (decided while they were open, or in the last dump's tables), and
// returns them; the others wait in natWait for the next dump (a scrape's,
// or the sweep's: see natCheckEvery). During a dump, all wait.
func (t *Tracer) withNAT(batch []ConnectionStats) []ConnectionStats {
	if t.ct == nil || len(batch) == 0 {
		return batch
	}
	if !t.ctMu.TryLock() {
		t.wait(batch)
		return nil
	}
	n := 0
	var later []ConnectionStats
	for _, c := range batch {
		tr, found := t.ct.lookupClosed(&c)
		c.IPTranslation = tr
		if found {
			batch[n] = c
			n++
		} else {
			later = append(later, c)
		}
	}
	t.ctMu.Unlock()
	t.wait(later)
	return batch[:n]
}

// wait queues closed connections for the next dump. Past
// MaxClosedConnectionsBuffered they go to the sink at once without their
// NAT (lost_total{reason="conntrack_state_full"}): their traffic is
// counted, under the address the socket saw.
func (t *Tracer) wait(conns []ConnectionStats) {
	if len(conns) == 0 {
		return
	}
	t.natMu.Lock()
	room := max(t.cfg.MaxClosedConnectionsBuffered-len(t.natWait), 0)
	over := conns[min(room, len(conns)):]
	t.natWait = append(t.natWait, conns[:min(room, len(conns))]...)
	t.natFull += uint64(len(over))
	t.natMu.Unlock()
	t.emit(over)
}

// translate finds the NAT of a read's connections and of the closed ones
// waiting for theirs (at most one dump per ConntrackInterval, when one of
// them is not decided yet), gives those now decided to the sink, and
// returns a copy of those still waiting (Snapshot.Leaving). Callers hold
// mu.
func (t *Tracer) translate(conns []ConnectionStats, now time.Time) []ConnectionStats {
	if t.ct == nil {
		return nil
	}
	t.natMu.Lock()
	pend := t.natWait
	t.natWait = t.natSpare[:0]
	t.natSpare = nil
	t.natMu.Unlock()
	t.ctMu.Lock()
	dumped := t.ct.translate(conns, pend, now)
	var ready []ConnectionStats
	n := 0
	for _, c := range pend {
		// After a dump, all go: their NAT found, or none to be found
		// (not NATed, or their namespace cannot be read: counted in
		// conntrack_error).
		if tr, ok := t.ct.lookupClosed(&c); ok || dumped {
			c.IPTranslation = tr
			ready = append(ready, c)
			continue
		}
		pend[n] = c
		n++
	}
	t.ctMu.Unlock()
	still := pend[:n]
	t.natMu.Lock()
	t.natWait = append(t.natWait, still...)
	t.natMu.Unlock()
	t.emit(ready)
	return slices.Clone(still)
}

// flushNAT gives the closed connections waiting for their NAT to the sink,
// with it, after a dump of their namespaces, when they are due: the last
// dump is ConntrackInterval old, or half of MaxClosedConnectionsBuffered
// wait. So closed connections wait at most ConntrackInterval (and the
// sweep's second), and dumps stay at one per interval however often
// clients scrape (a dump walks the whole conntrack table: BENCHMARKS.md).
// Callers hold mu.
func (t *Tracer) flushNAT(now time.Time) {
	if t.ct == nil {
		return
	}
	t.ctMu.Lock()
	last := t.ct.last
	t.ctMu.Unlock()
	t.natMu.Lock()
	n := len(t.natWait)
	if n == 0 || (now.Sub(last) < t.cfg.ConntrackInterval && n < t.cfg.MaxClosedConnectionsBuffered/2) {
		t.natMu.Unlock()
		return
	}
	waiting := t.natWait
	t.natWait = t.natSpare[:0]
	t.natSpare = nil
	t.natMu.Unlock()

	t.ctMu.Lock()
	dumpNS := map[uint32]struct{}{t.ct.selfNS: {}}
	for i := range waiting {
		dumpNS[waiting[i].NetNS] = struct{}{}
	}
	wanted := maps.Clone(dumpNS)
	for ns := range t.ct.tables {
		wanted[ns] = struct{}{} // kept, for the live connections' lookups
	}
	t.ct.dump(wanted, dumpNS, now)
	for i := range waiting {
		waiting[i].IPTranslation, _ = t.ct.lookupClosed(&waiting[i])
	}
	t.ctMu.Unlock()
	t.emit(waiting)
	// The sink keeps nothing of the slice: its array serves the next
	// wait (at most MaxClosedConnectionsBuffered records; dropped when
	// nobody scrapes).
	clear(waiting)
	t.natMu.Lock()
	t.natSpare = waiting[:0]
	t.natMu.Unlock()
}
