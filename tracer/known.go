package tracer

import (
	"cmp"
	"slices"
	"time"
)

// known holds the last values read of every tracked connection. It does
// three jobs:
//   - it keeps each connection's counters monotonic: a live read races the
//     kernel and may come out low (see sent_payload in conntrace.c), and a
//     counter that went down would look like a reset and be counted twice;
//   - it completes the live read: sockets no process holds (orphans after
//     close(), not yet accepted) are not visited by the task_file iterator,
//     so their last values are reported until their close record arrives,
//     or until TCPConnTimeout passes without news (their close record was
//     lost). Past it, the connection expires: it is no longer reported, but
//     what was reported of it is kept, so that a record that comes after
//     all (the orphan's close, the socket finally accepted) counts only what
//     is new, and never opens it again;
//   - it remembers connections that closed, so that a stale live read never
//     brings one back.
//
// It holds at most max entries but the live ones and, during a read, the
// closed ones, whether or not anyone scrapes: evict makes room.
type known struct {
	m   map[ConnKey]*knownConn
	gen uint64 // read generation
	max int
	// reading is set from before a read's iterator runs to its endRead:
	// only such a read can hold a stale record of a connection that
	// closes meanwhile (the iterator skips closed sockets), so only then
	// is a closed connection's entry kept.
	reading bool

	// order is the entries in the order the last read visited them, next
	// the order of this read. The iterator walks the kernel's socket hash
	// in the same order from one read to the next but for the sockets
	// that came or went, so a record's entry is most likely order[cur]:
	// found without a map lookup, which at 200,000 entries is a cache
	// miss or two per record (BENCHMARKS.md §13). The map decides
	// whenever the guess is wrong. A deleted entry leaves order (forget):
	// it keeps no closed connection's memory. (next holds only entries
	// visited by this read: none is deleted before the read ends.)
	order, next []*knownConn
	cur         int
	// endRead walks the whole map (27-32 ms at 200,000 entries) only if
	// some entry is none of: visited by this read, expired, or closed
	// during it unvisited. These count them; closing lists the keys of
	// the entries closed during the read, for dropClosed.
	visited, expiredN, closedIdle int
	closing                       []ConnKey

	// epoch is the origin of the entries' seen: the first time given
	// (with its monotonic reading, so that a step of the wall clock moves
	// no expiry), so that any time within 292 years of it fits (a test's
	// fake clock too).
	epoch    time.Time
	epochSet bool
	// bases holds, for each entry that expired once (rebased), what was
	// reported of it then: its later records count from there (rebase).
	// Apart from the entries, which are 8 bytes smaller for it: few ever
	// expire.
	bases map[ConnKey]Counters
}

type knownConn struct {
	stats ConnectionStats
	// seen is when a record of it last came, in ns since known.epoch.
	seen int64
	gen  uint64
	// pos is the entry's index in the visit order of the read that last
	// visited it (gen): known.next during that read, known.order after.
	// 32 bits, beside the flags: the entry stays in its 384-byte size
	// class (TestKnownConnSizeClass).
	pos int32
	// closed: its close record came. expired: past the timeout without
	// news; not reported. rebased: it expired once, and known.bases holds
	// what was reported of it then.
	closed, expired, rebased bool
}

// newKnown returns an empty known of at most max entries (at least 1).
func newKnown(max int) *known {
	return &known{m: make(map[ConnKey]*knownConn), max: max, bases: make(map[ConnKey]Counters)}
}

// since is t in the entries' clock (seen).
func (k *known) since(t time.Time) int64 {
	if !k.epochSet {
		k.epoch, k.epochSet = t, true
	}
	return int64(t.Sub(k.epoch))
}

// clamp makes c's counters at least what was reported of the connection
// (rebased if it expired). It does not change e: a snapshot may be
// reading e.stats (see Snapshot.Release).
func (k *known) clamp(e *knownConn, c *ConnectionStats) {
	k.rebase(e, c)
	c.Monotonic.Max(&e.stats.Monotonic)
}

// expire stops reporting the connection of key, keeping what was reported
// of it as the base of its later records.
func (k *known) expire(key ConnKey, e *knownConn) {
	base := e.stats.Monotonic
	if e.rebased {
		b := k.bases[key]
		base.Add(&b, true) // the stats are rebased already: back to the kernel's totals
	}
	k.bases[key] = base
	e.rebased, e.expired = true, true
	e.stats = ConnectionStats{}
}

// rebase makes a record of an expired connection count from what was
// reported of it: only the new part, and not an opening again.
func (k *known) rebase(e *knownConn, c *ConnectionStats) {
	if !e.rebased {
		return
	}
	b := k.bases[c.Key]
	c.Monotonic, _ = c.Monotonic.Sub(&b, false)
	c.Preexisting = true // its opening was counted before it expired
}

// startRead says a read's iterator is about to run; endRead or abortRead
// ends it.
func (k *known) startRead() { k.reading = true }

// abortRead ends a read that failed.
func (k *known) abortRead() {
	k.reading = false
	k.finishOrder()
	k.dropClosed()
}

// shrinkable says whether an array of capacity c that now holds n is
// worth dropping: a past peak's memory is not kept for good.
func shrinkable(c, n int) bool { return c > 4*n+4096 }

// beginRead starts a new read generation, when the read's records are
// processed.
func (k *known) beginRead() {
	k.gen++
	k.visited, k.cur = 0, 0
}

// finishOrder makes this read's visit order the one the next read
// guesses from.
func (k *known) finishOrder() {
	clear(k.order)
	k.order, k.next = k.next, k.order[:0]
	if shrinkable(cap(k.next), len(k.order)) {
		k.next = nil
	}
}

// dropClosed forgets the closed connections: no read that could hold a
// stale record of them is in flight. Entries are closed only during a
// read (closed deletes them otherwise), each listed in closing.
func (k *known) dropClosed() {
	for _, key := range k.closing {
		if e := k.m[key]; e != nil && e.closed {
			k.forget(key, e)
		}
	}
	clear(k.closing)
	k.closing, k.closedIdle = k.closing[:0], 0
	if shrinkable(cap(k.closing), 0) {
		k.closing = nil
	}
}

// forget deletes an entry, from the map and from the last read's order.
// Only expired entries (evict) are deleted during a read, never one it
// visited: the counts of endRead's shortcut hold.
func (k *known) forget(key ConnKey, e *knownConn) {
	delete(k.m, key)
	if e.rebased {
		delete(k.bases, key)
	}
	if e.expired {
		k.expiredN--
	}
	if int(e.pos) < len(k.order) && k.order[e.pos] == e {
		k.order[e.pos] = nil
	}
}

// find returns the entry of key, or nil: the one after the last found in
// the last read's order if that is it, else the map's.
func (k *known) find(key ConnKey) *knownConn {
	if k.cur < len(k.order) {
		if e := k.order[k.cur]; e != nil && e.stats.Key == key {
			k.cur++
			return e
		}
	}
	e := k.m[key]
	if e != nil && int(e.pos) < len(k.order) && k.order[e.pos] == e {
		k.cur = int(e.pos) + 1 // sockets came or went before this one
	}
	return e
}

// unexpire makes e reported again (a record came), keeping expiredN.
func (k *known) unexpire(e *knownConn) {
	if e.expired {
		e.expired = false
		k.expiredN--
	}
}

// add makes the entry of key (within max).
func (k *known) add(key ConnKey) *knownConn {
	if len(k.m) >= k.max {
		k.evict()
	}
	e := &knownConn{}
	k.m[key] = e
	return e
}

// live clamps a record of the current read and keeps it as the
// connection's last values: the snapshot reports them (e.stats), until its
// release. nil means the connection already closed and the record is
// stale.
func (k *known) live(c *ConnectionStats, now time.Time) *ConnectionStats {
	e := k.find(c.Key)
	if e == nil {
		e = k.add(c.Key)
	}
	if e.closed {
		return nil
	}
	k.unexpire(e) // visited again: reported again, from its base
	k.clamp(e, c)
	e.stats = *c
	if e.gen != k.gen { // not a second visit of the same socket
		e.gen, e.pos = k.gen, int32(len(k.next)) // len(k.m) is bounded far below 2^31
		k.next = append(k.next, e)
		k.visited++
	}
	e.seen = k.since(now)
	return &e.stats
}

// closed clamps a final record and marks the connection closed; the entry
// is kept only while a read is in flight (see reading). It says whether a
// read reported the connection live. The entry's values stay what the
// last read reported: a snapshot may be reading them, concurrently with
// the drain that calls this.
func (k *known) closed(c *ConnectionStats, now time.Time) (wasLive bool) {
	if !k.reading {
		if e := k.m[c.Key]; e != nil {
			k.clamp(e, c)
			k.forget(c.Key, e)
			return !e.expired
		}
		return false // never read live, nor expired: nothing to clamp against
	}
	// The map, not find: closes come in their own order, and would move
	// the guess of the read's next record.
	e := k.m[c.Key]
	if e == nil {
		e = k.add(c.Key)
	}
	wasLive = e.gen != 0 && !e.expired && !e.closed
	k.clamp(e, c)
	if !e.closed {
		k.closing = append(k.closing, c.Key)
		if e.gen != k.gen {
			k.closedIdle++
		}
	}
	k.unexpire(e)
	e.closed, e.seen = true, k.since(now)
	return wasLive
}

// endRead appends the connections not visited by this read and not closed,
// expires those not seen for timeout (returned with what was reported of
// them: they leave, as if closed, without a close), and forgets the closed ones. A late
// record of an expired connection is rebased, counting only what is new.
func (k *known) endRead(conns []*ConnectionStats, now time.Time, timeout time.Duration) (live []*ConnectionStats, expired []ConnectionStats) {
	// Else every entry was visited, expired or closed: nothing to do.
	if k.visited+k.expiredN+k.closedIdle != len(k.m) {
		k.expiredN = 0 // counted again here, whatever it said
		nowNs := k.since(now)
		for key, e := range k.m {
			switch {
			case e.expired:
				k.expiredN++
			case e.closed, e.gen == k.gen:
			case time.Duration(nowNs-e.seen) > timeout:
				expired = append(expired, e.stats)
				k.expire(key, e)
				k.expiredN++
			default:
				// Its last values; whether it is stalled now is not
				// known (no read visited it).
				e.stats.ZeroWindow = false
				conns = append(conns, &e.stats)
			}
		}
	}
	k.reading = false
	k.finishOrder()
	k.dropClosed()
	return conns, expired
}

// evict makes room: it drops the oldest quarter of the expired entries (a
// late record of one would be counted whole again: only reachable when
// close records were lost, which ring_buffer_full counts). Closed entries
// exist only while a read is in flight, and protect that read from stale
// records: they stay, and the map may pass max for that read. Live
// entries are never dropped: the kernel bounds them.
func (k *known) evict() {
	var old []ConnKey
	for key, e := range k.m {
		if e.expired {
			old = append(old, key)
		}
	}
	slices.SortFunc(old, func(a, b ConnKey) int { return cmp.Compare(k.m[a].seen, k.m[b].seen) })
	for _, key := range old[:(len(old)+3)/4] {
		k.forget(key, k.m[key])
	}
}
