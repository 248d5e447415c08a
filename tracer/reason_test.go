package tracer

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel's errors map to reasons as the README's table says; a failure
// without one was cancelled unless it never had a local port.
func TestEndReason(t *testing.T) {
	for _, c := range []struct {
		established bool
		errno       unix.Errno
		noPort      bool
		want        Reason
	}{
		{false, 0, false, ReasonCancelled},
		{false, 0, true, ReasonNoLocalPort},
		{false, unix.ECONNREFUSED, false, ReasonRefused},
		{false, unix.ETIMEDOUT, false, ReasonTimeout},
		{false, unix.EHOSTUNREACH, false, ReasonHostUnreachable},
		{false, unix.EHOSTDOWN, false, ReasonHostUnreachable},
		{false, unix.ENETUNREACH, false, ReasonNetUnreachable},
		{false, unix.ENETDOWN, false, ReasonNetUnreachable},
		{false, unix.ECONNRESET, false, ReasonReset},
		{false, unix.ECONNABORTED, false, ReasonOther},
		{true, 0, false, ReasonNone},
		{true, unix.ECONNRESET, false, ReasonReset},
		{true, unix.EPIPE, false, ReasonReset},
		{true, unix.ETIMEDOUT, false, ReasonTimeout},
		{true, unix.EHOSTUNREACH, false, ReasonHostUnreachable},
		{true, unix.ECONNABORTED, false, ReasonOther},
		{true, unix.EPROTO, false, ReasonOther},
	} {
		if got := endReason(c.established, uint16(c.errno), c.noPort); got != c.want {
			t.Errorf("endReason(established %v, %s, no port %v) = %s, want %s", c.established, ErrnoName(uint16(c.errno)), c.noPort, got, c.want)
		}
	}
	for r := Reason(0); r < NumReasons; r++ {
		if name := r.String(); name == "" || strings.HasPrefix(name, "reason(") {
			t.Errorf("reason %d has no name: %q", r, r.String())
		}
	}
	if got := ErrnoName(uint16(unix.ECONNABORTED)); got != "ECONNABORTED" {
		t.Errorf("ErrnoName(ECONNABORTED) = %q", got)
	}
	if got := ErrnoName(4000); got != "4000" {
		t.Errorf("ErrnoName(4000) = %q, want the number", got)
	}
}
