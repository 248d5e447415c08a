package tracer

import (
	"maps"
	"time"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// The closed connections that wait, once for all clients, for the next
// conntrack dump to find their NAT (EnableConntrack), and the translation
// of a read's connections.

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
