package tracer

import (
	"maps"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Reason is why a TCP connection ended badly: why a connect failed, or why
// an established connection was aborted. It is read from the kernel's own
// error on the socket (sk_err) when the socket reaches CLOSE, the error
// connect(), read() or write() would return, never guessed from traffic.
type Reason uint8

// The reasons. An established connection that closes without an error on
// its socket ended well (ReasonNone), whoever closed it and however: a
// reset this host sends (SO_LINGER 0) is no abort here, its peer's. (The
// kernel sets ECONNRESET on the sending socket too, in tcp_disconnect(),
// but only after its state change to CLOSE, which is when it is read.)
const (
	ReasonNone Reason = iota
	// ReasonCancelled: the application closed the socket while it was
	// connecting (no error: a dial's own time-out or cancellation).
	ReasonCancelled
	// ReasonRefused: ECONNREFUSED, the peer answered the SYN with a reset
	// (no listener on the port), or an ICMP port unreachable.
	ReasonRefused
	// ReasonTimeout: ETIMEDOUT, retransmissions (of the SYN, or of data or
	// keepalive probes) ran out.
	ReasonTimeout
	// ReasonReset: ECONNRESET, the peer reset the connection (EPIPE: it
	// did so after its FIN, in CLOSE_WAIT).
	ReasonReset
	// ReasonHostUnreachable: EHOSTUNREACH or EHOSTDOWN, from an ICMP
	// error, or the soft error an ICMP error left when retransmissions
	// ran out.
	ReasonHostUnreachable
	// ReasonNetUnreachable: ENETUNREACH or ENETDOWN, likewise.
	ReasonNetUnreachable
	// ReasonNoLocalPort: connect() found no free local port for the
	// destination (EADDRNOTAVAIL): the socket left SYN_SENT without a
	// port, before its SYN.
	ReasonNoLocalPort
	// ReasonOther: any other error; ConnectionStats.Errno names it (as
	// conntrace_connection_errors_total{errno} does).
	ReasonOther
	// NumReasons bounds the reasons, for arrays indexed by them.
	NumReasons
)

var reasonNames = [NumReasons]string{
	ReasonNone:            "none",
	ReasonCancelled:       "cancelled",
	ReasonRefused:         "refused",
	ReasonTimeout:         "timeout",
	ReasonReset:           "reset",
	ReasonHostUnreachable: "host_unreachable",
	ReasonNetUnreachable:  "net_unreachable",
	ReasonNoLocalPort:     "no_local_port",
	ReasonOther:           "other",
}

// String is the reason's label value.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// errnoReason classifies the kernel's error on a closed socket.
func errnoReason(errno uint16) Reason {
	switch unix.Errno(errno) {
	case 0:
		return ReasonNone
	case unix.ECONNREFUSED:
		return ReasonRefused
	case unix.ETIMEDOUT:
		return ReasonTimeout
	case unix.ECONNRESET, unix.EPIPE:
		return ReasonReset
	case unix.EHOSTUNREACH, unix.EHOSTDOWN:
		return ReasonHostUnreachable
	case unix.ENETUNREACH, unix.ENETDOWN:
		return ReasonNetUnreachable
	}
	return ReasonOther
}

// endReason is why a closed TCP connection ended: established is whether
// its handshake completed, errno the kernel's error on the socket at its
// close, noLocalPort whether it left SYN_SENT without a local port.
func endReason(established bool, errno uint16, noLocalPort bool) Reason {
	switch {
	case established:
		return errnoReason(errno)
	case errno != 0:
		return errnoReason(errno)
	case noLocalPort:
		return ReasonNoLocalPort
	}
	return ReasonCancelled
}

// ErrnoName names a kernel error number as the C constant (ECONNABORTED),
// or as its number when Linux has no name for it.
func ErrnoName(errno uint16) string {
	if n := unix.ErrnoName(unix.Errno(errno)); n != "" {
		return n
	}
	return strconv.Itoa(int(errno))
}

// errnoCounts counts closed connections by the kernel's error number. At
// most 65,536 keys (the record's 16 bits), and only the few the kernel
// sets on TCP sockets in practice.
type errnoCounts struct {
	mu sync.Mutex
	m  map[uint16]uint64
}

func (e *errnoCounts) add(errno uint16) {
	e.mu.Lock()
	if e.m == nil {
		e.m = map[uint16]uint64{}
	}
	e.m[errno]++
	e.mu.Unlock()
}

func (e *errnoCounts) snapshot() map[uint16]uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.m)
}
