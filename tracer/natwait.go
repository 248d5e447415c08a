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
	var over []ConnectionStats
	t.natMu.Lock()
	if which == nil {
		for i := range raws {
			over = t.queueLocked(&raws[i], t.drainComms, over)
		}
	} else {
		for _, i := range which {
			over = t.queueLocked(&raws[i], t.drainComms, over)
		}
	}
	t.natMu.Unlock()
	return over
}

// queueLocked queues r in natWait, or, past MaxClosedConnectionsBuffered,
// appends it to over decoded with names (to go at once without its NAT),
// counted. Callers hold natMu.
func (t *Tracer) queueLocked(r *bpf.ConntraceConnRecord, names comms, over []ConnectionStats) []ConnectionStats {
	if t.natWait.len() < t.cfg.MaxClosedConnectionsBuffered {
		t.natWait.push(r, &t.natFree)
		return over
	}
	t.natFull++
	return append(over, toConnectionStats(r, names))
}

// takeWaiting takes natWait, leaving it empty.
func (t *Tracer) takeWaiting() recordQueue {
	t.natMu.Lock()
	defer t.natMu.Unlock()
	w := t.natWait
	t.natWait = recordQueue{}
	return w
}

// recycle keeps a taken natWait's chunks for the next records (see
// chunkPool: what a burst took goes at a later, smaller one).
func (t *Tracer) recycle(w *recordQueue) {
	t.natMu.Lock()
	t.natFree.put(w)
	t.natMu.Unlock()
}

// translate finds the NAT of a read's connections and of the closed ones
// waiting for theirs (at most one dump per ConntrackInterval, when one of
// them is not decided yet), gives those now decided to the sink, and
// returns those still waiting that a read had reported live
// (Snapshot.Leaving: only the clients that counted one live need it).
// Callers hold mu.
func (t *Tracer) translate(conns []*ConnectionStats, now time.Time) []ConnectionStats {
	if t.ct == nil {
		return nil
	}
	recs := t.takeWaiting()
	refs := make([]closedRef, recs.len())
	for i := range refs {
		r := recs.at(i)
		refs[i] = closedRef{key: ConnKey{Cookie: r.Cookie, Generation: r.Gen}, netns: r.Netns, start: r.StartNs}
	}
	t.ctMu.Lock()
	dumped := t.ct.translate(conns, refs, now)
	var ready []readyRec
	var still []ConnectionStats
	var waiting []int
	for i := range refs {
		r := recs.at(i)
		c := toConnectionStats(r, t.comms)
		// After a dump, all go: their NAT found, or none to be found
		// (not NATed, or their namespace cannot be read: counted in
		// conntrack_error).
		if tr, ok := t.ct.lookupClosed(&c); ok || dumped {
			ready = append(ready, readyRec{i, tr})
			continue
		}
		waiting = append(waiting, i)
		if r.Flags&connWasLive != 0 {
			still = append(still, c)
		}
	}
	t.ctMu.Unlock()
	t.emitRecords(&recs, ready)
	// Back to wait, within MaxClosedConnectionsBuffered: the drain may
	// have filled natWait meanwhile. Past it, they go without their NAT,
	// counted, as in wait.
	var over []ConnectionStats
	t.natMu.Lock()
	for _, i := range waiting {
		over = t.queueLocked(recs.at(i), t.comms, over)
	}
	t.natMu.Unlock()
	t.emit(over)
	t.recycle(&recs)
	return still
}

// emitRecords gives the sink the records of ready, with their NAT, decoded
// in batches: no array of a whole natWait's connections (what a busy
// host's scrapes allocated). Callers hold mu.
func (t *Tracer) emitRecords(recs *recordQueue, ready []readyRec) {
	batch := make([]ConnectionStats, 0, min(len(ready), drainBatch))
	for _, r := range ready {
		c := toConnectionStats(recs.at(r.i), t.comms)
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
	n := t.natWait.len()
	if n == 0 || (now.Sub(last) < t.cfg.ConntrackInterval && n < t.cfg.MaxClosedConnectionsBuffered/2) {
		t.natMu.Unlock()
		return
	}
	t.natMu.Unlock()
	recs := t.takeWaiting()

	t.ctMu.Lock()
	dumpNS := map[uint32]struct{}{t.ct.selfNS: {}}
	for i := range recs.len() {
		dumpNS[recs.at(i).Netns] = struct{}{}
	}
	wanted := maps.Clone(dumpNS)
	for ns := range t.ct.tables {
		wanted[ns] = struct{}{} // kept, for the live connections' lookups
	}
	t.ct.dump(wanted, dumpNS, now)
	ready := make([]readyRec, recs.len())
	for i := range ready {
		c := toConnectionStats(recs.at(i), t.comms)
		tr, _ := t.ct.lookupClosed(&c)
		ready[i] = readyRec{i, tr}
	}
	t.ctMu.Unlock()
	t.emitRecords(&recs, ready)
	t.recycle(&recs)
}
