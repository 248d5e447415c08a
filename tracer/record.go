package tracer

import (
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// Flags and values shared with bpf/conntrace.c.
const (
	connEstablished = 1
	connClosed      = 2
	connPreexisting = 4

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
//     close(), not yet accepted) are not visited by the iterator, so their
//     last values are reported until their close record arrives, or until
//     TCPConnTimeout passes without news (their close record was lost);
//   - it remembers connections that closed, so that a stale live read never
//     brings one back.
type known struct {
	m   map[ConnKey]*knownConn
	gen uint64 // read generation
}

type knownConn struct {
	stats  ConnectionStats
	seen   time.Time
	gen    uint64
	closed bool
}

func newKnown() *known { return &known{m: make(map[ConnKey]*knownConn)} }

func (e *knownConn) clamp(c *ConnectionStats) {
	c.MonotonicSentBytes = max(e.stats.MonotonicSentBytes, c.MonotonicSentBytes)
	c.MonotonicRecvBytes = max(e.stats.MonotonicRecvBytes, c.MonotonicRecvBytes)
	c.MonotonicRetransmits = max(e.stats.MonotonicRetransmits, c.MonotonicRetransmits)
	c.MonotonicSentSegments = max(e.stats.MonotonicSentSegments, c.MonotonicSentSegments)
	e.stats = *c
}

// beginRead starts a new read generation.
func (k *known) beginRead() { k.gen++ }

// live clamps a record of the current read; false means the connection
// already closed and the record is stale.
func (k *known) live(c *ConnectionStats, now time.Time) bool {
	e := k.m[c.Key]
	if e == nil {
		e = &knownConn{}
		k.m[c.Key] = e
	} else if e.closed {
		return false
	}
	e.clamp(c)
	e.seen, e.gen = now, k.gen
	return true
}

// closed clamps a final record and marks the connection closed.
func (k *known) closed(c *ConnectionStats, now time.Time) {
	e := k.m[c.Key]
	if e == nil {
		e = &knownConn{}
		k.m[c.Key] = e
	}
	e.clamp(c)
	e.closed, e.seen = true, now
}

// endRead appends the connections not visited by this read and not closed,
// and forgets those not seen for timeout, returning their keys. A closed
// connection's entry only has to outlive the reads that started before it
// closed, so it goes sooner.
func (k *known) endRead(conns []ConnectionStats, now time.Time, timeout time.Duration) ([]ConnectionStats, []ConnKey) {
	var expired []ConnKey
	closedTimeout := min(timeout, 30*time.Second)
	for key, e := range k.m {
		age := now.Sub(e.seen)
		switch {
		case e.closed:
			if age > closedTimeout {
				delete(k.m, key)
			}
		case e.gen == k.gen:
		case age > timeout:
			delete(k.m, key)
			expired = append(expired, key)
		default:
			conns = append(conns, e.stats)
		}
	}
	return conns, expired
}
