package filter

import (
	"fmt"
	"net/netip"
)

// Proto is the transport protocol of a connection.
type Proto uint8

// The protocols; their values are the tracer's ConnectionType values.
const (
	TCP Proto = 0
	UDP Proto = 1
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("type(%d)", uint8(p))
}

// Conn is what the filters match of a connection: its protocol and its two
// sides. A source filter matches Local, a destination filter Remote. An
// invalid address matches nothing; IPv4-mapped addresses are unmapped and
// zones dropped before matching. A protocol other than TCP and UDP matches
// no port spec.
type Conn struct {
	Proto         Proto
	Local, Remote netip.AddrPort
}
