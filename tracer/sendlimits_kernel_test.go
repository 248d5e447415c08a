package tracer

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// A reader that stops reading: the writer stalls on its zero window (the
// live flag, against the writer's TCP_INFO), then the reader drains and
// the stall ends; at the close, what limited each side's sending (busy,
// receive-window limited, send-buffer limited) against both ends'
// TCP_INFO, exact in jiffies.
func TestSendLimitsAndZeroWindow(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) { c.MaxClients = 64 })
	p := nettest.NewPair(t)
	// Small buffers: the reader's window closes after a few segments.
	smallRcvbuf := func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16384) }); err != nil {
			return err
		}
		return serr
	}
	var ln net.Listener
	if err := nettest.Do(p.Server, func() (err error) {
		ln, err = (&net.ListenConfig{Control: smallRcvbuf}).Listen(t.Context(), "tcp", serverAddr(p, false))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	accepted := make(chan net.Conn, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- sc
	}()
	cc, err := dialWith(p, ln.Addr().String(), 0, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 16384)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer sc.Close()

	// The server never reads: the client's write stops when both
	// buffers are full.
	cc.SetWriteDeadline(time.Now().Add(1500 * time.Millisecond))
	written, err := cc.Write(bytes.Repeat([]byte{'z'}, 4<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client write to a reader that does not read: %d bytes, %v; want the deadline", written, err)
	}
	cc.SetWriteDeadline(time.Time{})
	o.waitFor("the client stalled on a zero window", func(tot map[string]*kTotals) bool { return tot["client"].zeroWindow == 1 })
	ci, err := nettest.TCPInfo(cc)
	if err != nil {
		t.Fatal(err)
	}
	if ci.Notsent_bytes+ci.Unacked == 0 {
		t.Errorf("client: nothing waits to be sent (TCP_INFO %+v), yet reported stalled", ci)
	}
	if kernelAtLeast(t, 6, 2) && ci.Snd_wnd != 0 { // tcpi_snd_wnd: Linux 6.2
		t.Errorf("client: reported stalled on a zero window, TCP_INFO's snd_wnd %d", ci.Snd_wnd)
	}
	if z := o.tot["server"].zeroWindow; z != 0 {
		t.Errorf("server: %d connections reported stalled, it sends nothing", z)
	}

	// The server reads what came: the window opens, the stall ends.
	if _, err := io.CopyN(io.Discard, sc, int64(written)); err != nil {
		t.Fatalf("server read: %v", err)
	}
	o.waitFor("the stall to end", func(tot map[string]*kTotals) bool { return tot["client"].zeroWindow == 0 })

	// More, with the server reading as it comes (the client's small send
	// buffer may limit it), then an orderly close on both sides.
	const more = 2 << 20
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, sc)
		if err == nil {
			err = sc.(*net.TCPConn).CloseWrite()
		}
		read <- err
	}()
	if _, err := cc.Write(bytes.Repeat([]byte{'m'}, more)); err != nil {
		t.Fatalf("client write: %v", err)
	}
	cc.(*net.TCPConn).CloseWrite()
	if err := <-read; err != nil {
		t.Fatalf("server read: %v", err)
	}
	if _, err := io.Copy(io.Discard, cc); err != nil {
		t.Fatalf("client waiting for the server's FIN: %v", err)
	}
	o.waitFor("both close records", func(tot map[string]*kTotals) bool {
		return tot["client"].closedSeen == 1 && tot["server"].closedSeen == 1
	})
	for side, c := range map[string]net.Conn{"client": cc, "server": sc} {
		ti, err := nettest.TCPInfo(c)
		if err != nil {
			t.Fatal(err)
		}
		if ti.State != unix.BPF_TCP_CLOSE {
			t.Fatalf("%s: state %d after both FINs, want CLOSE", side, ti.State)
		}
		got := o.tot[side].detail
		checkSendLimits(t, tr, side, &got, ti)
		t.Logf("%s: busy %d, rwnd-limited %d, sndbuf-limited %d jiffies; TCP_INFO %d, %d, %d µs", side,
			got.BusyJiffies, got.RwndLimitedJiffies, got.SndbufLimitedJiffies, ti.Busy_time, ti.Rwnd_limited, ti.Sndbuf_limited)
	}
	if c := o.tot["client"].detail; c.RwndLimitedJiffies == 0 || c.BusyJiffies < c.RwndLimitedJiffies {
		t.Errorf("client: rwnd-limited %d of busy %d jiffies, after stalling 1.5 s on the server's window", c.RwndLimitedJiffies, c.BusyJiffies)
	}
}
