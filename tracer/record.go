package tracer

import (
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// Flags and values shared with bpf/conntrace.c.
const (
	connEstablished = 1
	connClosed      = 2
	connPreexisting = 4
	connNoLocalPort = 8
	connZeroWindow  = 32
	connAddendum    = 64
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

// recordStream decodes the records an iterator writes as they come (an
// io.Writer), so that a scrape never holds them all: at 200,000 sockets
// that is 53 MB, and twice that while a buffer grows.
type recordStream struct {
	part [recordSize]byte // a record split between two writes
	n    int
	rec  bpf.ConntraceConnRecord
	each func(*bpf.ConntraceConnRecord)
	seen int // bytes written
}

func (s *recordStream) Write(p []byte) (int, error) {
	written := len(p)
	s.seen += written
	rec := unsafe.Slice((*byte)(unsafe.Pointer(&s.rec)), recordSize)
	for len(p) > 0 {
		if s.n == 0 && len(p) >= recordSize {
			copy(rec, p[:recordSize])
			p = p[recordSize:]
			s.each(&s.rec)
			continue
		}
		k := copy(s.part[s.n:], p)
		s.n, p = s.n+k, p[k:]
		if s.n == recordSize {
			copy(rec, s.part[:])
			s.n = 0
			s.each(&s.rec)
		}
	}
	return written, nil
}

// end says whether what was written was whole records.
func (s *recordStream) end() error {
	if s.n != 0 {
		return fmt.Errorf("connection records: %d bytes is not a multiple of the record size %d (kernel object and exporter out of step?)", s.seen, recordSize)
	}
	return nil
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
		Monotonic:       countersOf(r),
		LastUpdateEpoch: r.TsNs,
		StartEpoch:      r.StartNs,
		RTT:             r.SrttUs,
		HandshakeMicros: r.HandshakeUs,
		Pid:             r.Pid,
		Comm:            names.get(r.Comm),
		NetNS:           r.Netns,
		Cgroup:          r.Cgroup,
		SPort:           r.Sport,
		DPort:           r.Dport,
		Type:            TCP,
		Key:             ConnKey{Cookie: r.Cookie, Generation: r.Gen},
		Established:     r.Flags&connEstablished != 0,
		Closed:          r.Flags&connClosed != 0,
		Preexisting:     r.Flags&connPreexisting != 0,
		ZeroWindow:      r.Flags&connZeroWindow != 0,
		Addendum:        r.Flags&connAddendum != 0,
	}
	if c.Closed && !c.Addendum {
		c.Errno = uint8(min(r.Err, 255))
		c.End = endReason(c.Established, r.Err, r.Flags&connNoLocalPort != 0)
	}
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

// countersOf reads a record's counters; setRecordCounters writes them back
// (what known clamped or rebased). A new counter is a line in each.
func countersOf(r *bpf.ConntraceConnRecord) Counters {
	return Counters{
		SentBytes: r.SentBytes, RecvBytes: r.RecvBytes,
		Retransmits: r.Retransmits, SentSegments: r.SentSegments,
		RTT: RTTHistogram{Buckets: r.RttBuckets, SumMicros: r.RttSumUs},
		Detail: Detail[uint32]{
			RetransBytes: r.RetransBytes, RTOs: r.Rtos, Recoveries: r.Recoveries,
			DSACKs: r.Dsacks, Reorders: r.Reorders, OOOPackets: r.OooPackets, CEMarks: r.CeMarks,
			ResetsSent: r.ResetsSent, ResetsReceived: r.ResetsReceived,
			BusyJiffies: r.BusyJiffies, RwndLimitedJiffies: r.RwndLimitedJiffies, SndbufLimitedJiffies: r.SndbufLimitedJiffies,
		},
	}
}

func setRecordCounters(r *bpf.ConntraceConnRecord, m *Counters) {
	r.SentBytes, r.RecvBytes = m.SentBytes, m.RecvBytes
	r.Retransmits, r.SentSegments = m.Retransmits, m.SentSegments
	r.RttBuckets, r.RttSumUs = m.RTT.Buckets, m.RTT.SumMicros
	d := &m.Detail
	r.RetransBytes, r.Rtos, r.Recoveries = d.RetransBytes, d.RTOs, d.Recoveries
	r.Dsacks, r.Reorders, r.OooPackets, r.CeMarks = d.DSACKs, d.Reorders, d.OOOPackets, d.CEMarks
	r.ResetsSent, r.ResetsReceived = d.ResetsSent, d.ResetsReceived
	r.BusyJiffies, r.RwndLimitedJiffies, r.SndbufLimitedJiffies = d.BusyJiffies, d.RwndLimitedJiffies, d.SndbufLimitedJiffies
}
