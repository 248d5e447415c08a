package tracer

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
	"unsafe"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// Flags and values shared with bpf/conntrace.c.
const (
	connEstablished = 1
	connClosed      = 2
	connPreexisting = 4
	// connWasLive is set by user space only, on a closed record whose
	// connection a read had reported live (see Tracer.wait).
	connWasLive = 0x80

	dirIncoming = 1
	dirOutgoing = 2

	afInet  = 2
	afInet6 = 10
)

const recordSize = int(unsafe.Sizeof(bpf.ConntraceConnRecord{}))

// decodeRecords copies buf, a sequence of struct conn_record written by the
// kernel in host byte order, into recs (reused when large enough). One copy
// into an aligned slice instead of decoding field by field: a scrape may
// carry 100,000 records.
func decodeRecords(recs []bpf.ConntraceConnRecord, buf []byte) ([]bpf.ConntraceConnRecord, error) {
	if len(buf)%recordSize != 0 {
		return recs[:0], fmt.Errorf("connection records: %d bytes is not a multiple of the record size %d (kernel object and exporter out of step?)", len(buf), recordSize)
	}
	n := len(buf) / recordSize
	if cap(recs) < n {
		recs = make([]bpf.ConntraceConnRecord, n)
	}
	recs = recs[:n]
	if n > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&recs[0])), len(buf)), buf)
	}
	return recs, nil
}

// comms interns process names: the same few repeat on every scrape.
type comms map[[16]int8]string

func (m comms) get(c [16]int8) string {
	if s, ok := m[c]; ok {
		return s
	}
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	if len(m) >= 4096 { // bounded: start over rather than grow
		clear(m)
	}
	s := string(b)
	m[c] = s
	return s
}

// endpoints decodes the kernel's family (AF_INET, AF_INET6) and addresses
// (an IPv4 address in the first 4 of 16 bytes).
func endpoints(family uint8, local, remote *[16]byte) (ConnectionFamily, netip.Addr, netip.Addr) {
	if family == afInet6 {
		return AFINET6, netip.AddrFrom16(*local), netip.AddrFrom16(*remote)
	}
	return AFINET, netip.AddrFrom4([4]byte(local[:4])), netip.AddrFrom4([4]byte(remote[:4]))
}

func toConnectionStats(r *bpf.ConntraceConnRecord, names comms) ConnectionStats {
	c := ConnectionStats{
		MonotonicSentBytes:    r.SentBytes,
		MonotonicRecvBytes:    r.RecvBytes,
		MonotonicRetransmits:  r.Retransmits,
		MonotonicSentSegments: r.SentSegments,
		LastUpdateEpoch:       r.TsNs,
		StartEpoch:            r.StartNs,
		RTT:                   r.SrttUs,
		RTTVar:                r.RttvarUs,
		Pid:                   r.Pid,
		Comm:                  names.get(r.Comm),
		NetNS:                 r.Netns,
		SPort:                 r.Sport,
		DPort:                 r.Dport,
		Type:                  TCP,
		Key:                   ConnKey{Cookie: r.Cookie, Generation: r.Gen},
		Established:           r.Flags&connEstablished != 0,
		Closed:                r.Flags&connClosed != 0,
		Preexisting:           r.Flags&connPreexisting != 0,
	}
	c.MonotonicRTT.Buckets = r.RttBuckets
	c.MonotonicRTT.SumMicros = r.RttSumUs
	c.Family, c.Source, c.Dest = endpoints(r.Family, &r.Saddr, &r.Daddr)
	switch r.Direction {
	case dirIncoming:
		c.Direction = INCOMING
	case dirOutgoing:
		c.Direction = OUTGOING
	default:
		c.Direction = NONE
	}
	c.classifyDirection()
	return c
}

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
}

type knownConn struct {
	stats ConnectionStats
	seen  time.Time
	gen   uint64
	// closed: its close record came. expired: past the timeout without
	// news; not reported.
	closed, expired bool
	// base is what was reported of the connection when it expired (nil
	// before): its later records are counted from there (rebase).
	base *ConnectionStats
}

// newKnown returns an empty known of at most max entries (at least 1).
func newKnown(max int) *known {
	return &known{m: make(map[ConnKey]*knownConn), max: max}
}

func (e *knownConn) clamp(c *ConnectionStats) {
	e.rebase(c)
	c.MonotonicSentBytes = max(e.stats.MonotonicSentBytes, c.MonotonicSentBytes)
	c.MonotonicRecvBytes = max(e.stats.MonotonicRecvBytes, c.MonotonicRecvBytes)
	c.MonotonicRetransmits = max(e.stats.MonotonicRetransmits, c.MonotonicRetransmits)
	c.MonotonicSentSegments = max(e.stats.MonotonicSentSegments, c.MonotonicSentSegments)
	e.stats = *c
}

// expire stops reporting the connection, keeping what was reported of it
// as the base of its later records.
func (e *knownConn) expire() {
	base := e.stats
	if e.base != nil {
		e.undo(&base) // the stats are rebased already
	}
	e.base = &base
	e.expired = true
	e.stats = ConnectionStats{}
}

// rebase makes a record of an expired connection count from what was
// reported of it: only the new part, and not an opening again.
func (e *knownConn) rebase(c *ConnectionStats) {
	b := e.base
	if b == nil {
		return
	}
	floor := func(v, base uint64) uint64 { return v - min(v, base) }
	c.MonotonicSentBytes = floor(c.MonotonicSentBytes, b.MonotonicSentBytes)
	c.MonotonicRecvBytes = floor(c.MonotonicRecvBytes, b.MonotonicRecvBytes)
	c.MonotonicRetransmits = uint32(floor(uint64(c.MonotonicRetransmits), uint64(b.MonotonicRetransmits)))
	c.MonotonicSentSegments = uint32(floor(uint64(c.MonotonicSentSegments), uint64(b.MonotonicSentSegments)))
	for i, v := range c.MonotonicRTT.Buckets {
		c.MonotonicRTT.Buckets[i] = uint32(floor(uint64(v), uint64(b.MonotonicRTT.Buckets[i])))
	}
	c.MonotonicRTT.SumMicros = floor(c.MonotonicRTT.SumMicros, b.MonotonicRTT.SumMicros)
	c.Preexisting = true // its opening was counted before it expired
}

// undo turns rebased stats back into the kernel's totals.
func (e *knownConn) undo(c *ConnectionStats) {
	b := e.base
	c.MonotonicSentBytes += b.MonotonicSentBytes
	c.MonotonicRecvBytes += b.MonotonicRecvBytes
	c.MonotonicRetransmits += b.MonotonicRetransmits
	c.MonotonicSentSegments += b.MonotonicSentSegments
	c.MonotonicRTT.Add(&b.MonotonicRTT)
}

// startRead says a read's iterator is about to run; endRead or abortRead
// ends it.
func (k *known) startRead() { k.reading = true }

// abortRead ends a read that failed.
func (k *known) abortRead() { k.reading = false; k.dropClosed() }

// beginRead starts a new read generation, when the read's records are
// processed.
func (k *known) beginRead() { k.gen++ }

// dropClosed forgets the closed connections: no read that could hold a
// stale record of them is in flight.
func (k *known) dropClosed() {
	for key, e := range k.m {
		if e.closed {
			delete(k.m, key)
		}
	}
}

// entry returns the entry of c, made (within max) if new.
func (k *known) entry(c *ConnectionStats) *knownConn {
	e := k.m[c.Key]
	if e == nil {
		if len(k.m) >= k.max {
			k.evict()
		}
		e = &knownConn{}
		k.m[c.Key] = e
	}
	return e
}

// live clamps a record of the current read; false means the connection
// already closed and the record is stale.
func (k *known) live(c *ConnectionStats, now time.Time) bool {
	e := k.entry(c)
	if e.closed {
		return false
	}
	e.expired = false // visited again: reported again, from its base
	e.clamp(c)
	e.seen, e.gen = now, k.gen
	return true
}

// closed clamps a final record and marks the connection closed; the entry
// is kept only while a read is in flight (see reading). It says whether a
// read reported the connection live.
func (k *known) closed(c *ConnectionStats, now time.Time) (wasLive bool) {
	if !k.reading {
		if e := k.m[c.Key]; e != nil {
			e.clamp(c)
			delete(k.m, c.Key)
			return !e.expired
		}
		return false // never read live, nor expired: nothing to clamp against
	}
	e := k.entry(c)
	wasLive = e.gen != 0 && !e.expired && !e.closed
	e.clamp(c)
	e.closed, e.expired, e.seen = true, false, now
	return wasLive
}

// endRead appends the connections not visited by this read and not closed,
// expires those not seen for timeout (returned with what was reported of
// them: they leave, as if closed, without a close), and forgets the closed ones. A late
// record of an expired connection is rebased, counting only what is new.
func (k *known) endRead(conns []ConnectionStats, now time.Time, timeout time.Duration) (live, expired []ConnectionStats) {
	for _, e := range k.m {
		switch {
		case e.closed, e.expired, e.gen == k.gen:
		case now.Sub(e.seen) > timeout:
			expired = append(expired, e.stats)
			e.expire()
		default:
			conns = append(conns, e.stats)
		}
	}
	k.reading = false
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
	slices.SortFunc(old, func(a, b ConnKey) int { return k.m[a].seen.Compare(k.m[b].seen) })
	for _, key := range old[:(len(old)+3)/4] {
		delete(k.m, key)
	}
}
