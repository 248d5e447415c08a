package tracer

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/go-kit/log/level"
	"golang.org/x/sys/unix"

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
// fill: 8 MiB hold 30,840 records (BENCHMARKS.md §11).
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

// sweepLoop, until Close, closes idle UDP flows, expires the DNS cache, and
// gives the closed connections waiting for their NAT after a dump, even
// when nobody scrapes: memory stays bounded without scrapes.
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
			if t.dns != nil {
				t.dns.Expire(now)
			}
		}
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
	batch, raws := t.drainBuf[:0], t.drainRaw[:0]
	defer func() { t.drainBuf, t.drainRaw = batch[:0], raws[:0] }()
	for {
		err := t.closedRd.ReadInto(&t.drainRec)
		if err == nil {
			batch, raws = t.takeRecord(batch, raws, t.drainRec.RawSample)
			if len(batch) < drainBatch {
				continue
			}
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			level.Warn(t.logger).Log("msg", "reading the closed-connection ring buffer", "err", err)
		}
		t.settle(batch, raws, now)
		if err != nil {
			return
		}
		batch, raws = batch[:0], raws[:0]
	}
}

// takeRecord decodes one closed-connection record and appends it to batch,
// and the record to raws, if it is traced. Callers hold drainMu.
func (t *Tracer) takeRecord(batch []ConnectionStats, raws []bpf.ConntraceConnRecord, raw []byte) ([]ConnectionStats, []bpf.ConntraceConnRecord) {
	recs, err := decodeRecords(t.drainOne[:], raw)
	if err != nil || len(recs) != 1 {
		t.decode.Add(1)
		level.Warn(t.logger).Log("msg", "undecodable closed-connection record", "bytes", len(raw), "err", err)
		return batch, raws
	}
	if c := toConnectionStats(&recs[0], t.drainComms); t.keep(&c) {
		batch, raws = append(batch, c), append(raws, recs[0])
	}
	return batch, raws
}

// settle marks a batch of closed connections closed in known (which clamps
// their counters: copied back into their records) and gives them to the
// sink, with their NAT where known (see withNAT).
func (t *Tracer) settle(batch []ConnectionStats, raws []bpf.ConntraceConnRecord, now time.Time) {
	if len(batch) == 0 {
		return
	}
	t.kmu.Lock()
	for i := range batch {
		live := t.known.closed(&batch[i], now)
		recordCounters(&raws[i], &batch[i])
		if live {
			raws[i].Flags |= connWasLive
		}
	}
	t.kmu.Unlock()
	if t.wanted() {
		t.emit(t.withNAT(batch, raws))
	}
}

// recordCounters writes c's counters back into its record r: what known
// changed (clamped, or rebased: counters, RTT, preexisting).
func recordCounters(r *bpf.ConntraceConnRecord, c *ConnectionStats) {
	m := &c.Monotonic
	r.SentBytes, r.RecvBytes, r.Retransmits, r.SentSegments = m.SentBytes, m.RecvBytes, m.Retransmits, m.SentSegments
	r.RttBuckets, r.RttSumUs = m.RTT.Buckets, m.RTT.SumMicros
	if c.Preexisting {
		r.Flags |= connPreexisting
	}
}

// withNAT sets the NAT of the closed connections whose translation is
// known (decided while they were open, in the last dump's tables, or
// started before it and absent from it), and returns them; the others wait
// in natWait for the next dump (a scrape's, or the sweep's: see
// natCheckEvery). During a dump, all wait. raws are batch's records.
func (t *Tracer) withNAT(batch []ConnectionStats, raws []bpf.ConntraceConnRecord) []ConnectionStats {
	if t.ct == nil || len(batch) == 0 {
		return batch
	}
	if !t.ctMu.TryLock() {
		return t.wait(raws, nil)
	}
	n := 0
	var later []int
	for i, c := range batch {
		tr, found := t.ct.lookupClosed(&c)
		c.IPTranslation = tr
		if found {
			batch[n] = c
			n++
		} else {
			later = append(later, i)
		}
	}
	t.ctMu.Unlock()
	if len(later) == 0 {
		return batch[:n]
	}
	return append(batch[:n], t.wait(raws, later)...)
}

// wait queues closed connections for the next dump, as their records
// (raws, or those of raws at the indexes which): pointer-free, so the
// garbage collector does not scan natWait, and 40 % smaller than a
// ConnectionStats. Past MaxClosedConnectionsBuffered they are returned, to
// go to the sink at once without their NAT
// (lost_total{reason="conntrack_state_full"}): their traffic is counted,
// under the address the socket saw. which nil means all. Callers hold
// drainMu.
func (t *Tracer) wait(raws []bpf.ConntraceConnRecord, which []int) []ConnectionStats {
	if which == nil {
		which = make([]int, len(raws))
		for i := range which {
			which[i] = i
		}
	}
	var over []ConnectionStats
	t.natMu.Lock()
	for _, i := range which {
		if len(t.natWait) < t.cfg.MaxClosedConnectionsBuffered {
			t.natWait = append(t.natWait, raws[i])
			continue
		}
		t.natFull++
		over = append(over, toConnectionStats(&raws[i], t.drainComms))
	}
	t.natMu.Unlock()
	return over
}

// takeWaiting takes natWait, leaving it empty (its previous array, if
// small, for reuse).
func (t *Tracer) takeWaiting() []bpf.ConntraceConnRecord {
	t.natMu.Lock()
	defer t.natMu.Unlock()
	w := t.natWait
	t.natWait = t.natSpare[:0]
	t.natSpare = nil
	return w
}

// recycle keeps a taken natWait's array for the next, if it is small (a
// burst's goes).
func (t *Tracer) recycle(w []bpf.ConntraceConnRecord) {
	if cap(w) > 4096 {
		return
	}
	t.natMu.Lock()
	t.natSpare = w[:0]
	t.natMu.Unlock()
}

// translate finds the NAT of a read's connections and of the closed ones
// waiting for theirs (at most one dump per ConntrackInterval, when one of
// them is not decided yet), gives those now decided to the sink, and
// returns those still waiting that a read had reported live
// (Snapshot.Leaving: only the clients that counted one live need it).
// Callers hold mu.
func (t *Tracer) translate(conns []ConnectionStats, now time.Time) []ConnectionStats {
	if t.ct == nil {
		return nil
	}
	recs := t.takeWaiting()
	refs := make([]closedRef, len(recs))
	for i := range recs {
		refs[i] = closedRef{key: ConnKey{Cookie: recs[i].Cookie, Generation: recs[i].Gen}, netns: recs[i].Netns, start: recs[i].StartNs}
	}
	t.ctMu.Lock()
	dumped := t.ct.translate(conns, refs, now)
	var ready []readyRec
	var still []ConnectionStats
	waiting := make([]bool, len(recs))
	for i := range recs {
		c := toConnectionStats(&recs[i], t.comms)
		// After a dump, all go: their NAT found, or none to be found
		// (not NATed, or their namespace cannot be read: counted in
		// conntrack_error).
		if tr, ok := t.ct.lookupClosed(&c); ok || dumped {
			ready = append(ready, readyRec{i, tr})
			continue
		}
		waiting[i] = true
		if recs[i].Flags&connWasLive != 0 {
			still = append(still, c)
		}
	}
	t.ctMu.Unlock()
	t.emitRecords(recs, ready)
	n := 0
	for i := range recs {
		if waiting[i] {
			recs[n] = recs[i]
			n++
		}
	}
	t.natMu.Lock()
	t.natWait = append(t.natWait, recs[:n]...)
	t.natMu.Unlock()
	t.recycle(recs)
	return still
}

// emitRecords gives the sink the records of ready, with their NAT, decoded
// in batches: no array of a whole natWait's connections (what a busy
// host's scrapes allocated). Callers hold mu.
func (t *Tracer) emitRecords(recs []bpf.ConntraceConnRecord, ready []readyRec) {
	batch := make([]ConnectionStats, 0, min(len(ready), drainBatch))
	for _, r := range ready {
		c := toConnectionStats(&recs[r.i], t.comms)
		c.IPTranslation = r.tr
		if batch = append(batch, c); len(batch) == cap(batch) {
			t.emit(batch)
			batch = batch[:0]
		}
	}
	t.emit(batch)
}

// readyRec is a waiting record whose NAT is decided.
type readyRec struct {
	i  int
	tr *IPTranslation
}

// closedRef is what the conntrack tracker needs of a closed connection
// waiting for its NAT.
type closedRef struct {
	key   ConnKey
	netns uint32
	start uint64
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
	t.natMu.Unlock()
	recs := t.takeWaiting()

	t.ctMu.Lock()
	dumpNS := map[uint32]struct{}{t.ct.selfNS: {}}
	for i := range recs {
		dumpNS[recs[i].Netns] = struct{}{}
	}
	wanted := maps.Clone(dumpNS)
	for ns := range t.ct.tables {
		wanted[ns] = struct{}{} // kept, for the live connections' lookups
	}
	t.ct.dump(wanted, dumpNS, now)
	ready := make([]readyRec, len(recs))
	for i := range recs {
		c := toConnectionStats(&recs[i], t.comms)
		tr, _ := t.ct.lookupClosed(&c)
		ready[i] = readyRec{i, tr}
	}
	t.ctMu.Unlock()
	t.emitRecords(recs, ready)
	t.recycle(recs)
}

// ktimeNow is the kernel's bpf_ktime_get_ns clock (CLOCK_MONOTONIC) now.
func ktimeNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("CLOCK_MONOTONIC: %v", err)) // cannot fail on Linux
	}
	return uint64(ts.Nano())
}
