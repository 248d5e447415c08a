package tracer

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// kernelAtLeast says whether the running kernel is major.minor or newer.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var ma, mi int
	if _, err := fmt.Sscanf(rel, "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", rel, err)
	}
	return ma > major || ma == major && mi >= minor
}

// hasCapability says whether the tracer found the kernel offering name.
func hasCapability(tr *Tracer, name string) bool {
	for _, c := range tr.Stats().Support {
		if c.Name == name {
			return c.Available
		}
	}
	return false
}

// One bulk transfer through loss, congestion marks and a second and a half
// without acknowledgements, then each end's loss counters against its own
// TCP_INFO, read once both ends are closed (their files still open): bytes
// retransmitted, D-SACKs, reorderings, packets received out of order, CE
// marks; retransmission timeouts against tcpi_total_rto (Linux 6.7+) and
// fast recovery entries against the client namespace's TCPSackRecovery
// (the only connection there), where the kernel has tcp_cong_state_set.
func TestLossCountersMatchTCPInfo(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	if err := nettest.Do(p.Client, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_ecn", []byte("1"), 0) // ask for ECN
	}); err != nil {
		t.Fatal(err)
	}
	ln, port := listen(t, p, false)
	// The server's namespace drops one data segment in 8 and marks one
	// in 16 CE; for a while, it sends no ACK (the client's timer fires,
	// and what it sends again the server had: D-SACKs).
	p.ServerNft(t, fmt.Sprintf(`table ip conntrace_loss {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport %d meta length > 200 numgen random mod 8 == 0 drop
		tcp dport %d meta length > 200 numgen random mod 16 == 0 ip ecn set ce
	}
	chain output {
		type filter hook output priority 0; policy accept;
	}
}`, port, port))
	nftServer := func(cmd ...string) {
		t.Helper()
		args := append([]string{"netns", "exec", p.ServerName, "nft"}, cmd...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %s: %v: %s", strings.Join(cmd, " "), err, out)
		}
	}
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	extBefore := tcpExt(t, p.Client)

	// The server reads it all, answers one byte and, at the client's
	// FIN, closes its side; the client waits for both FINs. Both sockets
	// are then CLOSE in the kernel, their counters final, and their files
	// still open for TCP_INFO.
	const size = 8 << 20
	served := make(chan net.Conn, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			served <- nil
			return
		}
		served <- sc
		if _, err := io.CopyN(io.Discard, sc, size); err != nil {
			return
		}
		sc.Write([]byte{'k'}) // all of it came
		io.Copy(io.Discard, sc)
		sc.(*net.TCPConn).CloseWrite()
	}()
	cc, err := p.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc := <-served
	if sc == nil {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	cc.SetDeadline(time.Now().Add(60 * time.Second))
	// First 256 KiB with no ACK coming back for 1.5 s: the client's timer
	// fires, and what it sends again the server had.
	nftServer("add", "rule", "ip", "conntrace_loss", "output", "tcp", "sport", strconv.Itoa(int(port)), "drop")
	wrote := make(chan error, 1)
	go func() {
		_, err := cc.Write(bytes.Repeat([]byte{'c'}, size))
		wrote <- err
	}()
	time.Sleep(1500 * time.Millisecond)
	nftServer("flush", "chain", "ip", "conntrace_loss", "output")
	if err := <-wrote; err != nil {
		t.Fatalf("client write: %v", err)
	}
	if _, err := io.ReadFull(cc, make([]byte, 1)); err != nil {
		t.Fatalf("client waiting for the server to read it all: %v", err)
	}
	cc.(*net.TCPConn).CloseWrite()
	if _, err := io.Copy(io.Discard, cc); err != nil {
		t.Fatalf("client waiting for the server's FIN: %v", err)
	}
	o.waitFor("both close records", func(tot map[string]*kTotals) bool {
		return tot["client"].closedSeen == 1 && tot["server"].closedSeen == 1
	})
	ci, err := nettest.TCPInfo(cc)
	if err != nil {
		t.Fatal(err)
	}
	si, err := nettest.TCPInfo(sc)
	if err != nil {
		t.Fatal(err)
	}
	if ci.State != unix.BPF_TCP_CLOSE || si.State != unix.BPF_TCP_CLOSE {
		t.Fatalf("states %d and %d after both FINs, want CLOSE", ci.State, si.State)
	}
	ext := tcpExt(t, p.Client)

	for side, ti := range map[string]*unix.TCPInfo{"client": ci, "server": si} {
		got := o.tot[side].detail
		want := Detail[uint64]{
			RetransBytes: ti.Bytes_retrans, DSACKs: uint64(ti.Dsack_dups), Reorders: uint64(ti.Reord_seen),
			OOOPackets: uint64(ti.Rcv_ooopack), CEMarks: uint64(ti.Delivered_ce),
			RTOs: got.RTOs, Recoveries: got.Recoveries, // checked below
			// A clean close: no reset either way.
			ResetsSent: 0, ResetsReceived: 0,
			BusyJiffies: got.BusyJiffies, RwndLimitedJiffies: got.RwndLimitedJiffies, SndbufLimitedJiffies: got.SndbufLimitedJiffies, // below
		}
		if got != want {
			t.Errorf("%s: loss counters %+v, TCP_INFO %+v", side, got, want)
		}
		checkSendLimits(t, tr, side, &got, ti)
		if kernelAtLeast(t, 6, 7) && got.RTOs != uint64(ti.Total_rto) {
			t.Errorf("%s: %d retransmission timeouts, TCP_INFO's total_rto %d", side, got.RTOs, ti.Total_rto)
		}
		t.Logf("%s: %+v (total_rto %d)", side, got, ti.Total_rto)
	}
	c := o.tot["client"].detail
	if c.BusyJiffies == 0 {
		t.Errorf("client: no busy time after sending %d bytes", c.RetransBytes)
	}
	if c.RetransBytes == 0 || c.DSACKs == 0 || c.RTOs == 0 || c.CEMarks == 0 || o.tot["server"].detail.OOOPackets == 0 {
		t.Errorf("the test made no loss of some kind: client %+v, server %+v", c, o.tot["server"].detail)
	}
	recoveries := ext["TCPSackRecovery"] + ext["TCPRenoRecovery"] - extBefore["TCPSackRecovery"] - extBefore["TCPRenoRecovery"]
	if hasCapability(tr, "tracepoint:tcp/tcp_cong_state_set") {
		if c.Recoveries != recoveries || recoveries == 0 {
			t.Errorf("client: %d fast recoveries, its namespace's TCPSackRecovery and TCPRenoRecovery %d (want equal, and some)", c.Recoveries, recoveries)
		}
	} else {
		t.Logf("no tcp_cong_state_set on this kernel: fast recoveries not counted (%d in the namespace)", recoveries)
	}
}

// checkSendLimits compares what limited a side's sending, in jiffies,
// with its TCP_INFO's µs, converted as the kernel converts
// (tcp_get_info_chrono_stats: jiffies times 1e6/HZ).
func checkSendLimits(t *testing.T, tr *Tracer, side string, got *Detail[uint64], ti *unix.TCPInfo) {
	t.Helper()
	jm := tr.JiffyMicros()
	if jm == 0 {
		t.Fatal("the tracer did not find the kernel's tick rate")
	}
	for _, c := range []struct {
		name    string
		jiffies uint64
		micros  uint64
	}{
		{"busy", got.BusyJiffies, ti.Busy_time},
		{"rwnd_limited", got.RwndLimitedJiffies, ti.Rwnd_limited},
		{"sndbuf_limited", got.SndbufLimitedJiffies, ti.Sndbuf_limited},
	} {
		if c.jiffies*jm != c.micros {
			t.Errorf("%s: %s %d jiffies of %d µs = %d µs, TCP_INFO %d µs", side, c.name, c.jiffies, jm, c.jiffies*jm, c.micros)
		}
	}
}
