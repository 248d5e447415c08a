package tracer

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/conntrace/conntrace_exporter/filter"
)

// ConnectionType is the transport protocol of a connection.
type ConnectionType uint8

const (
	// TCP connection type.
	TCP ConnectionType = 0
	// UDP connection type.
	UDP ConnectionType = 1
)

func (t ConnectionType) String() string {
	switch t {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// ConnectionFamily is the address family of a connection.
type ConnectionFamily uint8

const (
	// AFINET is IPv4 (IPv4-mapped IPv6 sockets are reported as IPv4).
	AFINET ConnectionFamily = 0
	// AFINET6 is IPv6.
	AFINET6 ConnectionFamily = 1
)

func (f ConnectionFamily) String() string {
	if f == AFINET6 {
		return "ipv6"
	}
	return "ipv4"
}

// ConnectionDirection says which side opened the connection.
type ConnectionDirection uint8

const (
	// INCOMING is a connection a peer opened to this host (passive open).
	INCOMING ConnectionDirection = 1
	// OUTGOING is a connection this host opened (active open).
	OUTGOING ConnectionDirection = 2
	// LOCAL is a connection whose both ends are on this host.
	LOCAL ConnectionDirection = 3
	// NONE is a connection without a direction.
	NONE ConnectionDirection = 4
)

func (d ConnectionDirection) String() string {
	switch d {
	case INCOMING:
		return "incoming"
	case OUTGOING:
		return "outgoing"
	case LOCAL:
		return "local"
	}
	return "none"
}

// ConnKey identifies one connection for its whole life: the kernel's socket
// cookie, and a generation that changes when a socket is reused for a new
// connection (connect(AF_UNSPEC) then connect again keeps the cookie).
type ConnKey struct {
	Cookie     uint64
	Generation uint32
}

func (k ConnKey) String() string { return fmt.Sprintf("%d/%d", k.Cookie, k.Generation) }

// ConnectionStats stores statistics for a single connection. The field names
// follow the seed; its per-client Last* are netstate's job (per label set,
// not per connection).
type ConnectionStats struct {
	Source netip.Addr
	Dest   netip.Addr

	// Monotonic are the connection's counters since the tracer first saw
	// it.
	Monotonic Counters

	// LastUpdateEpoch is when these values were read, in nanoseconds of
	// CLOCK_MONOTONIC (the kernel's bpf_ktime_get_ns).
	LastUpdateEpoch uint64
	// StartEpoch is when the tracer first saw the connection (CLOCK_MONOTONIC ns).
	StartEpoch uint64

	// RTT is the kernel's smoothed RTT, in µs.
	RTT uint32
	// HandshakeMicros is how long the TCP handshake took, in µs (at least
	// 1): from the SYN sent (active) or received (passive) to
	// ESTABLISHED. 0 when unknown: before establishment, for a connection
	// found at start-up, and for a passive one whose SYN was not timed
	// (SYN cookies). It took the place of the seed's RTTVar (the mean
	// deviation, exported nowhere), to keep the tracer's entry per
	// connection in its size class.
	HandshakeMicros uint32

	Pid   uint32
	NetNS uint32
	Comm  string
	SPort uint16
	DPort uint16
	// Errno is the kernel's error on the socket when it closed (sk_err),
	// 0 for none or while open; End is what it means. A byte: errnos end
	// at 133, and the byte it saves makes room for Cgroup.
	Errno uint8
	// End is why a closed TCP connection ended: a failure's reason when it
	// never established, an abort's when it did (ReasonNone: it closed
	// well). ReasonNone while open, and for UDP.
	End Reason

	// The bytes above and below, from SPort on, fill 16 bytes: with
	// Cgroup, 360 bytes in all, which keeps the tracer's entry per
	// connection in the 384-byte size class (TestKnownConnSizeClass).
	Type      ConnectionType
	Family    ConnectionFamily
	Direction ConnectionDirection
	// Established is true once the TCP handshake completed.
	Established bool
	// Closed is true for a connection reported by its close event.
	Closed bool
	// Preexisting is true for a connection that was open before the
	// tracer started; its counters start at the tracer's start.
	Preexisting bool
	// ZeroWindow, in a live read: the peer's receive window is zero and
	// data waits to be sent (the connection is stalled on it).
	ZeroWindow bool
	// Addendum: not a connection, but what one sent after its final
	// record (a reset: close() with unread data, SO_LINGER 0). It has a
	// key of its own, its connection's identity and labels, and only
	// Monotonic.Detail.ResetsSent: it opens, closes and fails nothing.
	Addendum bool
	// ServerSide is true when the local side serves: the socket was
	// accepted from a listener (TCP) or bound to its port explicitly (UDP).
	// It decides the service port, whatever the direction.
	ServerSide bool
	// IntraHost is true when the other end is traced on this host too (in
	// any network namespace).
	IntraHost bool

	// Cgroup is the id of the socket's cgroup (v2): the inode of its
	// directory; 0 when unknown. The cgroup the process that made the
	// socket was in (an accepted one: the listener's), for the socket's
	// whole life. Named only with Config.Cgroups (Tracer.Cgroup).
	Cgroup uint64

	Key ConnKey
	// IPTranslation is the NAT the kernel's conntrack applies to the
	// connection, if any (EnableConntrack).
	IPTranslation *IPTranslation
}

// filterConn is what the filters match of c: Source and SPort are its local
// side, Dest and DPort its remote one. It allocates nothing.
func (c *ConnectionStats) filterConn() filter.Conn {
	return filter.Conn{
		Proto:  filter.Proto(c.Type),
		Local:  netip.AddrPortFrom(c.Source, c.SPort),
		Remote: netip.AddrPortFrom(c.Dest, c.DPort),
	}
}

// filter.Proto(c.Type) needs the same values: a constant index out of range
// fails to compile.
var (
	_ = [1]struct{}{}[uint8(filter.TCP)-uint8(TCP)]
	_ = [1]struct{}{}[uint8(TCP)-uint8(filter.TCP)]
	_ = [1]struct{}{}[uint8(filter.UDP)-uint8(UDP)]
	_ = [1]struct{}{}[uint8(UDP)-uint8(filter.UDP)]
)

// NATRemote is the real peer: behind a NAT, the address conntrack expects
// the reply from; else the remote address.
func (c *ConnectionStats) NATRemote() netip.Addr {
	if c.IPTranslation != nil && c.IPTranslation.ReplSrcIP.IsValid() {
		return c.IPTranslation.ReplSrcIP
	}
	return c.Dest
}

// ServicePort is the port that names the service: the local port of the
// server side, the remote port otherwise. The side that accepted or bound
// decides, not the port numbers, so an ephemeral port is never chosen.
func (c *ConnectionStats) ServicePort() uint16 {
	if c.ServerSide || c.Direction == INCOMING {
		return c.SPort
	}
	return c.DPort
}

// classifyDirection turns the kernel's direction (who connected, or who
// bound) into the reported one: local when the traffic never leaves the
// socket's host stack (a loopback peer, or the socket's own address). An
// unspecified remote (a UDP datagram read without asking who sent it) is
// no address at all, whatever the local one.
func (c *ConnectionStats) classifyDirection() {
	c.ServerSide = c.Direction == INCOMING
	if c.Dest.IsLoopback() || (c.Dest.IsValid() && !c.Dest.IsUnspecified() && c.Dest == c.Source) {
		c.Direction = LOCAL
	}
}

// endpointKey is one end of a connection, to find its other end: 20 bytes
// and no pointer (a netip.Addr is 24 with its zone's handle), so that the
// set of every socket's end (200,000 at the scale of BENCHMARKS.md §13) is
// smaller and the garbage collector does not scan it. is4 keeps an IPv4
// address apart from its IPv4-mapped IPv6 form, as netip.Addr does; the
// kernel's addresses carry no zone.
type endpointKey struct {
	addr [16]byte
	port uint16
	typ  ConnectionType
	is4  bool
}

func endpointOf(a netip.Addr, port uint16, typ ConnectionType) endpointKey {
	return endpointKey{addr: a.As16(), port: port, typ: typ, is4: a.Is4()}
}

// markIntraHostWith sets IntraHost on the connections whose other end is in
// conns too: both ends traced on this host. A UDP server socket bound to the
// unspecified address has no address to match, so its clients' flows are
// not marked (a port alone could be any host's). ends is a map to reuse
// (cleared first; nil for a new one): the tracer keeps one across scrapes,
// so that a scrape of 20,000 connections does not allocate its 1.5 MB again.
func markIntraHostWith(conns []*ConnectionStats, ends map[endpointKey]struct{}) {
	if ends == nil {
		ends = make(map[endpointKey]struct{}, len(conns))
	}
	clear(ends)
	for _, c := range conns {
		ends[endpointOf(c.Source, c.SPort, c.Type)] = struct{}{}
	}
	for _, c := range conns {
		_, ok := ends[endpointOf(c.Dest, c.DPort, c.Type)]
		c.IntraHost = ok
	}
}

// Lifecycle says whether the connection counts as opened, closed and
// failed: an opening is counted when established (not for a connection
// older than the tracer), a closing when an established connection closes,
// a failure when one closes without ever being established.
func (c *ConnectionStats) Lifecycle() (opened, closed, failed bool) {
	switch {
	case c.Addendum:
		return false, false, false
	case c.Closed && !c.Established:
		return false, false, true
	case c.Established:
		return !c.Preexisting, c.Closed, false
	}
	return false, false, false
}

// DebugKey is the connection's key for debug output, readable: what the
// seed's binary key held (PID, ports, family, type, addresses) and what
// this tracer keys on (network namespace, socket cookie and generation):
//
//	p:1234|src:198.18.0.1:40000|dst:198.18.0.2:443|f:0|t:0|netns:4026531840|cookie:99/2
//
// The state is keyed by ConnKey.
func (c ConnectionStats) DebugKey() string {
	addr := func(a netip.Addr) netip.Addr {
		switch {
		case !a.IsValid():
			return a
		case c.Family == AFINET:
			return a.Unmap()
		}
		return netip.AddrFrom16(a.As16())
	}
	src, dst := addr(c.Source), addr(c.Dest)
	return fmt.Sprintf("p:%d|src:%s|dst:%s|f:%d|t:%d|netns:%d|cookie:%s",
		c.Pid, netip.AddrPortFrom(src, c.SPort), netip.AddrPortFrom(dst, c.DPort), c.Family, c.Type, c.NetNS, c.Key)
}

// ConnectionSummary returns a one-line summary of a connection. names maps
// addresses to names (reverse DNS); it may be nil.
func ConnectionSummary(c ConnectionStats, names map[netip.Addr][]string) string {
	addr := func(a netip.Addr) string {
		if n := names[a]; len(n) > 0 {
			return strings.Join(n, ",")
		}
		return a.String()
	}
	s := fmt.Sprintf("[%s] [PID: %d] [%s:%d ⇄ %s:%d] (%s) %s sent, %s received",
		strings.ToUpper(c.Type.String()), c.Pid,
		addr(c.Source), c.SPort, addr(c.Dest), c.DPort, c.Direction,
		humanize.Bytes(c.Monotonic.SentBytes), humanize.Bytes(c.Monotonic.RecvBytes))
	if c.Type == TCP {
		s += fmt.Sprintf(", %d retransmits, RTT %s",
			c.Monotonic.Retransmits, time.Duration(c.RTT)*time.Microsecond)
		if c.HandshakeMicros > 0 {
			s += fmt.Sprintf(", handshake %s", time.Duration(c.HandshakeMicros)*time.Microsecond)
		}
	}
	return s
}

func (c ConnectionStats) String() string { return ConnectionSummary(c, nil) }

// Connections is what GetActiveConnections returns to one client.
type Connections struct {
	Conns []ConnectionStats
	// DNS maps the remote addresses (NATRemote) of Conns to the names DNS
	// answers on this host gave them (DNSInspection).
	DNS map[netip.Addr][]string
	// NewClient is true on a client's first call: its deltas are all zero,
	// and whatever the caller accumulated for that client must restart.
	NewClient bool
}
