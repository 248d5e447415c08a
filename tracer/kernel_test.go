package tracer

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// These tests load the real programs and send real traffic between two
// network namespaces; the test owns both ends, so it knows the truth.

// kTotals accumulates one client's deltas per connection end.
type kTotals struct {
	sent, recv, retrans    uint64
	segs                   uint64
	opened, closed, failed uint64
	// failures and aborts count the closed connections by reason.
	failures, aborts       [NumReasons]uint64
	rttCount, rttSumMicros uint64
	lastRTT, lastHandshake uint32
	// lastDuration is the last closed connection's life, ESTABLISHED to
	// CLOSE, in µs (as netstate counts it).
	lastDuration uint64
	// detail adds up the Detail counters' deltas.
	detail Detail[uint64]
	// zeroWindow counts the live connections the last poll reported
	// stalled on a zero window.
	zeroWindow              int
	conns                   map[ConnKey]bool
	closedSeen, preexisting int
	pids                    map[uint32]bool
	comms                   map[string]bool
	families                map[ConnectionFamily]bool
	cgroups                 map[uint64]bool
}

// end selects the connections of one side of the test traffic.
type end struct {
	src, dst netip.Addr
	port     uint16 // the server port
	incoming bool
	udp      bool
}

func (e end) match(c *ConnectionStats) bool {
	if c.Source != e.src || c.Dest != e.dst || (c.Type == UDP) != e.udp {
		return false
	}
	if e.incoming {
		return c.SPort == e.port && c.Direction == INCOMING
	}
	if e.udp {
		return c.DPort == e.port && c.Direction == NONE
	}
	return c.DPort == e.port && c.Direction == OUTGOING
}

type observer struct {
	t      *testing.T
	tr     *Tracer
	client string
	mu     sync.Mutex
	ends   map[string]end
	tot    map[string]*kTotals
	// missesAtStart are the tracer's recursion misses when the observer
	// started; with tolerateMisses, a wait that times out after the
	// kernel skipped a program sets missed instead of failing (see
	// retryOnMiss).
	missesAtStart  uint64
	tolerateMisses bool
	missed         bool
	// strays are the last records on one of the ends' ports that no end
	// matched, for a time-out's dump: a record keyed wrongly is then
	// told from one never made.
	strays []ConnectionStats
}

func newObserver(t *testing.T, tr *Tracer, client string, ends map[string]end) *observer {
	o := &observer{t: t, tr: tr, client: client, ends: ends, tot: map[string]*kTotals{}}
	o.missesAtStart = tr.Stats().Lost[LostRecursionMisses]
	for name := range ends {
		o.tot[name] = &kTotals{conns: map[ConnKey]bool{}, pids: map[uint32]bool{}, comms: map[string]bool{}, families: map[ConnectionFamily]bool{}, cgroups: map[uint64]bool{}}
	}
	o.poll() // registers the client: first call, zero deltas
	return o
}

// poll makes one call for the client and adds its deltas.
func (o *observer) poll() bool {
	o.t.Helper()
	conns, err := o.tr.GetActiveConnections(o.client)
	if err != nil {
		o.t.Fatalf("GetActiveConnections(%s): %v", o.client, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, tt := range o.tot {
		tt.zeroWindow = 0
	}
	for i := range conns.Conns {
		c := &conns.Conns[i]
		matched := false
		for name, e := range o.ends {
			if !e.match(&c.ConnectionStats) {
				continue
			}
			matched = true
			tt := o.tot[name]
			tt.sent += c.Last.SentBytes
			tt.recv += c.Last.RecvBytes
			tt.retrans += uint64(c.Last.Retransmits)
			tt.segs += uint64(c.Last.SentSegments)
			tt.opened += uint64(c.LastOpened)
			tt.closed += uint64(c.LastClosed)
			tt.failed += uint64(c.LastFailed)
			last := c.Last.Widen()
			tt.detail.add(&last.Detail)
			if c.ZeroWindow && !c.Closed {
				tt.zeroWindow++
			}
			tt.rttCount += c.Last.RTT.Count()
			tt.rttSumMicros += c.Last.RTT.SumMicros
			tt.lastRTT = c.RTT
			if c.HandshakeMicros != 0 {
				tt.lastHandshake = c.HandshakeMicros
			}
			tt.conns[c.Key] = true
			tt.pids[c.Pid] = true
			tt.comms[c.Comm] = true
			tt.families[c.Family] = true
			tt.cgroups[c.Cgroup] = true
			if c.Closed {
				tt.closedSeen++
				if c.Established {
					est := c.StartEpoch // passive: tracked from ESTABLISHED
					if !c.ServerSide {
						est += uint64(c.HandshakeMicros) * 1000
					}
					tt.lastDuration = (c.LastUpdateEpoch - est) / 1000
				}
				switch _, closed, failed := c.Lifecycle(); {
				case failed:
					tt.failures[c.End]++
				case closed && c.End != ReasonNone:
					tt.aborts[c.End]++
				}
			}
			if c.Preexisting {
				tt.preexisting++
			}
		}
		if !matched {
			o.noteStray(&c.ConnectionStats)
		}
	}
	return conns.NewClient
}

// waitFor polls until cond holds on the kTotals, or fails after 5s.
func (o *observer) waitFor(what string, cond func(map[string]*kTotals) bool) {
	o.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o.poll()
		o.mu.Lock()
		ok := cond(o.tot)
		o.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if o.tolerateMisses && o.tr.Stats().Lost[LostRecursionMisses] > o.missesAtStart {
				o.t.Logf("client %s: no %s, and the kernel skipped a program meanwhile (counted in conntrace_lost_total): %s", o.client, what, o.dump())
				o.missed = true
				return
			}
			o.t.Fatalf("client %s: timed out waiting for %s; kTotals: %s", o.client, what, o.dump())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noteStray keeps c, which no end matched, in strays (the last 8) if it
// is on one of the ends' ports.
func (o *observer) noteStray(c *ConnectionStats) {
	for _, e := range o.ends {
		if c.SPort == e.port || c.DPort == e.port {
			if o.strays = append(o.strays, *c); len(o.strays) > 8 {
				o.strays = o.strays[1:]
			}
			return
		}
	}
}

// dump is one line (the kernel matrix's summary keeps only the lines a
// test logged), sorted, with what the tracer says it failed to count: a
// time-out then tells a slow guest from a lost count.
func (o *observer) dump() string {
	names := make([]string, 0, len(o.tot))
	for name := range o.tot {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		tt := o.tot[name]
		fmt.Fprintf(&b, " [%s: sent=%d recv=%d retrans=%d opened=%d closed=%d failed=%d rtt_samples=%d conns=%d closedSeen=%d]",
			name, tt.sent, tt.recv, tt.retrans, tt.opened, tt.closed, tt.failed, tt.rttCount, len(tt.conns), tt.closedSeen)
	}
	st := o.tr.Stats()
	fmt.Fprintf(&b, " tracked_udp_flows=%d lost:", st.TrackedUDPFlows)
	for _, reason := range LostReasons {
		if n := st.Lost[reason]; n > 0 {
			fmt.Fprintf(&b, " %s=%d", reason, n)
		}
	}
	for _, ps := range st.Programs {
		if ps.RecursionMisses > 0 {
			fmt.Fprintf(&b, " (%s missed %d)", ps.Program, ps.RecursionMisses)
		}
	}
	if len(o.strays) > 0 {
		b.WriteString(" records on these ports no end matched:")
		for i := range o.strays {
			c := &o.strays[i]
			_, closed, failed := c.Lifecycle()
			fmt.Fprintf(&b, " [%s dir=%v established=%v closed=%v failed=%v]", c.DebugKey(), c.Direction, c.Established, closed, failed)
		}
	}
	return b.String()
}

// attemptObserver is the observer of one attempt of retryOnMiss: its client
// named after the test and the attempt, a wait that times out after a
// program run the kernel skipped marking it missed.
func attemptObserver(t *testing.T, tr *Tracer, attempt int, ends map[string]end) *observer {
	t.Helper()
	o := newObserver(t, tr, fmt.Sprintf("%s/%d", t.Name(), attempt), ends)
	o.tolerateMisses = true
	return o
}

// retryOnMiss runs attempt (given its number, from 0) until it ends with
// its observer not missed, at most three times. On a preemptible kernel
// (PREEMPT_FULL or LAZY, as Debian's newest) a thread preempted inside a
// tracing program makes that program skip on the next thread the CPU runs,
// and the kernel counts it as a recursion miss: the tracer exports it in
// conntrace_lost_total{reason="recursion_misses"}, and the bytes of that
// call are not counted. Such an attempt proves nothing about exactness,
// only that nothing was counted twice (the attempt's own checks); under
// TCG, where programs run long, one in a few runs has one.
func retryOnMiss(t *testing.T, attempt func(t *testing.T, n int) *observer) {
	t.Helper()
	for n := 0; n < 3; n++ {
		if o := attempt(t, n); o == nil || !o.missed {
			return
		}
		t.Logf("attempt %d: a program run was skipped by the kernel; again", n+1)
	}
	t.Fatal("three attempts in a row had a program run skipped by the kernel: exactness not shown")
}

func pairEnds(p *nettest.Pair, v6 bool, port uint16) map[string]end {
	c, s := p.Client4, p.Server4
	if v6 {
		c, s = p.Client6, p.Server6
	}
	return map[string]end{
		"client": {src: c, dst: s, port: port},
		"server": {src: s, dst: c, port: port, incoming: true},
	}
}

func serverAddr(p *nettest.Pair, v6 bool) string {
	if v6 {
		return net.JoinHostPort(p.Server6.String(), "0")
	}
	return net.JoinHostPort(p.Server4.String(), "0")
}

// exchange runs one connection: the client sends n bytes and half-closes,
// the server reads them all, answers m bytes and closes; the client reads
// them all and closes. It returns the client's and server's conns still open
// when keepOpen is set (the caller closes them).
func exchange(t *testing.T, p *nettest.Pair, ln net.Listener, n, m int, keepOpen bool) (net.Conn, net.Conn) {
	t.Helper()
	return exchangeTo(t, p, ln, ln.Addr().String(), n, m, keepOpen)
}

// exchangeTo is exchange with the client dialing addr.
func exchangeTo(t testing.TB, p *nettest.Pair, ln net.Listener, addr string, n, m int, keepOpen bool) (net.Conn, net.Conn) {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			done <- res{err: err}
			return
		}
		got, err := io.CopyN(io.Discard, sc, int64(n))
		if err != nil || got != int64(n) {
			done <- res{err: fmt.Errorf("server read %d of %d: %v", got, n, err)}
			return
		}
		if _, err := sc.Write(bytes.Repeat([]byte{'s'}, m)); err != nil {
			done <- res{err: err}
			return
		}
		if !keepOpen {
			// Read the client's FIN, then close: an orderly close on both sides.
			io.Copy(io.Discard, sc)
			sc.Close()
		}
		done <- res{c: sc}
	}()
	cc, err := p.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	if _, err := cc.Write(bytes.Repeat([]byte{'c'}, n)); err != nil {
		t.Fatalf("client write: %v", err)
	}
	got, err := io.CopyN(io.Discard, cc, int64(m))
	if err != nil || got != int64(m) {
		t.Fatalf("client read %d of %d: %v", got, m, err)
	}
	if !keepOpen {
		cc.(*net.TCPConn).CloseWrite()
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !keepOpen {
		io.Copy(io.Discard, cc)
		cc.Close()
		return nil, nil
	}
	return cc, r.c
}

func listen(t *testing.T, p *nettest.Pair, v6 bool) (net.Listener, uint16) {
	t.Helper()
	ln, err := p.Listen("tcp", serverAddr(p, v6))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

func familyName(v6 bool) string {
	if v6 {
		return "ipv6"
	}
	return "ipv4"
}

// Test 1: exact bytes, both directions, both ends, closed and live.
func TestExactBytesPerPeer(t *testing.T) {
	// One client per subtest.
	tr := newTestTracer(t, func(c *Config) { c.MaxClients = 64 })
	p := nettest.NewPair(t)
	sizes := [][2]int{{0, 0}, {1, 1}, {1, 0}, {0, 1}, {1000, 54321}, {1234567, 54321}, {32 << 20, 3 << 20}}
	for _, v6 := range []bool{false, true} {
		for _, sz := range sizes {
			n, m := sz[0], sz[1]
			t.Run(fmt.Sprintf("%s/closed/%d-%d", familyName(v6), n, m), func(t *testing.T) {
				ln, port := listen(t, p, v6)
				o := newObserver(t, tr, t.Name(), pairEnds(p, v6, port))
				exchange(t, p, ln, n, m, false)
				o.waitFor("both close records", func(tot map[string]*kTotals) bool {
					return tot["client"].closedSeen == 1 && tot["server"].closedSeen == 1
				})
				checkTotals(t, o, "client", uint64(n), uint64(m))
				checkTotals(t, o, "server", uint64(m), uint64(n))
				for _, side := range []string{"client", "server"} {
					if tt := o.tot[side]; tt.opened != 1 || tt.closed != 1 || tt.failed != 0 {
						t.Errorf("%s: opened=%d closed=%d failed=%d, want 1 1 0", side, tt.opened, tt.closed, tt.failed)
					}
				}
			})
		}
		t.Run(familyName(v6)+"/live", func(t *testing.T) {
			// An open, quiet connection reads exact at scrape time, with no
			// event after the last byte.
			ln, port := listen(t, p, v6)
			o := newObserver(t, tr, t.Name(), pairEnds(p, v6, port))
			cc, sc := exchange(t, p, ln, 777777, 12345, true)
			defer cc.Close()
			defer sc.Close()
			o.waitFor("live counters", func(tot map[string]*kTotals) bool {
				return tot["client"].sent == 777777 && tot["client"].recv == 12345 &&
					tot["server"].sent == 12345 && tot["server"].recv == 777777
			})
			time.Sleep(100 * time.Millisecond)
			o.poll()
			checkTotals(t, o, "client", 777777, 12345)
			checkTotals(t, o, "server", 12345, 777777)
			if tt := o.tot["client"]; tt.opened != 1 || tt.closed != 0 {
				t.Errorf("open connection: opened=%d closed=%d, want 1 0", tt.opened, tt.closed)
			}
			// The client end's local port is the one connect() picked (after
			// SYN_SENT, so read again at ESTABLISHED).
			maps, err := tr.DebugNetworkMaps()
			if err != nil {
				t.Fatal(err)
			}
			wantSPort := uint16(cc.LocalAddr().(*net.TCPAddr).Port)
			found := false
			for i := range maps.Conns {
				if c := &maps.Conns[i]; o.ends["client"].match(c) {
					found = true
					if c.SPort != wantSPort || c.Source != o.ends["client"].src {
						t.Errorf("client end local %s:%d, want %s:%d", c.Source, c.SPort, o.ends["client"].src, wantSPort)
					}
				}
			}
			if !found {
				t.Error("client end not in the kernel's connections")
			}
			// Both ends belong to this process: the client's from connect(),
			// the server's from its listener.
			comm := filepath.Base(os.Args[0])
			if len(comm) > 15 {
				comm = comm[:15]
			}
			for _, side := range []string{"client", "server"} {
				tt := o.tot[side]
				if len(tt.pids) != 1 || !tt.pids[uint32(os.Getpid())] || len(tt.comms) != 1 || !tt.comms[comm] {
					t.Errorf("%s: pids %v comms %v, want {%d} {%q}", side, tt.pids, tt.comms, os.Getpid(), comm)
				}
			}
		})
	}
	t.Run("ipv4-on-dual-stack-socket", func(t *testing.T) {
		// A dual-stack listener accepts IPv4 on an IPv6 socket, with
		// IPv4-mapped addresses: reported as IPv4, with IPv4 addresses.
		ln, err := p.Listen("tcp", "[::]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
		exchangeTo(t, p, ln, net.JoinHostPort(p.Server4.String(), strconv.Itoa(int(port))), 5555, 666, false)
		o.waitFor("both close records", func(tot map[string]*kTotals) bool {
			return tot["client"].closedSeen == 1 && tot["server"].closedSeen == 1
		})
		checkTotals(t, o, "client", 5555, 666)
		checkTotals(t, o, "server", 666, 5555)
		if f := o.tot["server"].families; len(f) != 1 || !f[AFINET] {
			t.Errorf("server end families %v, want ipv4 only", f)
		}
	})
}

func checkTotals(t *testing.T, o *observer, side string, sent, recv uint64) {
	t.Helper()
	tt := o.tot[side]
	if tt.sent != sent || tt.recv != recv {
		t.Errorf("%s: sent=%d recv=%d, want sent=%d recv=%d", side, tt.sent, tt.recv, sent, recv)
	}
	if len(tt.conns) != 1 {
		t.Errorf("%s: %d connections matched, want 1", side, len(tt.conns))
	}
}

// Test 2: with packets dropped, retransmits equal TCP_INFO's total.
func TestRetransmitsMatchTCPInfo(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	p.DropServerDataSegments(t, int(port))
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	cc, sc := exchange(t, p, ln, 2<<20, 10, true)
	defer sc.Close()
	defer cc.Close()
	// Quiet connection: everything acknowledged, nothing in flight.
	var info struct{ retrans, segs uint32 }
	deadline := time.Now().Add(5 * time.Second)
	for {
		ti, err := nettest.TCPInfo(cc)
		if err != nil {
			t.Fatal(err)
		}
		if ti.Unacked == 0 {
			info.retrans = ti.Total_retrans
			info.segs = ti.Data_segs_out
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("data still unacknowledged: %+v", ti)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info.retrans == 0 {
		t.Fatal("the drop rule caused no retransmission: the test proves nothing")
	}
	o.poll()
	if got := o.tot["client"].retrans; got != uint64(info.retrans) {
		t.Errorf("exported retransmits %d, TCP_INFO total_retrans %d", got, info.retrans)
	}
	// The retransmit ratio's denominator: data segments sent, as TCP_INFO.
	if got := o.tot["client"].segs; got != uint64(info.segs) {
		t.Errorf("exported sent segments %d, TCP_INFO data_segs_out %d", got, info.segs)
	}
	if got := o.tot["client"].sent; got != 2<<20 {
		t.Errorf("sent %d under loss, want %d", got, 2<<20)
	}
	t.Logf("retransmits: %d of %d data segments", info.retrans, info.segs)
}

// Test 3: RTT samples reach the histogram, and agree with TCP_INFO.
func TestRTTHistogramMatchesTCPInfo(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	cc, sc := exchange(t, p, ln, 1, 1, true)
	defer cc.Close()
	defer sc.Close()
	go io.Copy(sc, sc) // echo
	var rttSum, rttN uint64
	buf := make([]byte, 100)
	// The smoothed RTT is an average with a long memory: warm up so that the
	// start of the connection no longer weighs on it, then measure a window
	// of steady ping-pong.
	for i := 0; i < 700; i++ {
		if i == 200 {
			o.poll()
			o.tot["client"].rttCount, o.tot["client"].rttSumMicros = 0, 0
		}
		if _, err := cc.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(cc, buf); err != nil {
			t.Fatal(err)
		}
		ti, err := nettest.TCPInfo(cc)
		if err != nil {
			t.Fatal(err)
		}
		if i >= 200 {
			rttSum += uint64(ti.Rtt)
			rttN++
		}
	}
	o.poll()
	tt := o.tot["client"]
	if tt.rttCount < 100 {
		t.Fatalf("only %d RTT samples for 500 exchanges", tt.rttCount)
	}
	mean := float64(tt.rttSumMicros) / float64(tt.rttCount)
	want := float64(rttSum) / float64(rttN)
	if d := (mean - want) / want; d > 0.10 || d < -0.10 {
		t.Errorf("histogram mean RTT %.1fµs, TCP_INFO mean RTT %.1fµs: off by %.0f%%", mean, want, 100*d)
	}
	ti, _ := nettest.TCPInfo(cc)
	if tt.lastRTT != ti.Rtt {
		t.Errorf("exported smoothed RTT %dµs, TCP_INFO %dµs", tt.lastRTT, ti.Rtt)
	}
	t.Logf("samples=%d mean=%.1fµs tcp_info mean=%.1fµs srtt=%dµs", tt.rttCount, mean, want, tt.lastRTT)
}

// Test 4: 1,000 short-lived connections, each counted once, bytes exact.
func TestShortLivedConnections(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	const conns, n, m = 1000, 100, 37
	for i := 0; i < conns; i++ {
		exchange(t, p, ln, n, m, false)
		if i%100 == 0 {
			o.poll() // interleave scrapes with the churn
		}
	}
	o.waitFor("every close record", func(tot map[string]*kTotals) bool {
		return tot["client"].closedSeen == conns && tot["server"].closedSeen == conns
	})
	for side, want := range map[string][2]uint64{"client": {n * conns, m * conns}, "server": {m * conns, n * conns}} {
		tt := o.tot[side]
		if tt.opened != conns || tt.closed != conns || tt.failed != 0 {
			t.Errorf("%s: opened=%d closed=%d failed=%d, want %d %d 0", side, tt.opened, tt.closed, tt.failed, conns, conns)
		}
		if tt.sent != want[0] || tt.recv != want[1] {
			t.Errorf("%s: sent=%d recv=%d, want %d %d", side, tt.sent, tt.recv, want[0], want[1])
		}
		if len(tt.conns) != conns {
			t.Errorf("%s: %d distinct connections, want %d", side, len(tt.conns), conns)
		}
	}
}

// Test 5: two clients interleaved see exact kTotals; a late one sees zero
// first, then exact increments.
func TestClientsInterleaved(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	ends := pairEnds(p, false, port)
	a := newObserver(t, tr, "A", ends)
	b := newObserver(t, tr, "B", ends)
	for i := 0; i < 20; i++ {
		exchange(t, p, ln, 1000*(i+1), 10, false)
		if i%2 == 0 {
			a.poll()
		} else {
			b.poll()
		}
	}
	// Phase 2, with an open connection spanning the late client's arrival.
	cc, sc := exchange(t, p, ln, 5000, 0, true)
	c := newObserver(t, tr, "C", ends)
	if c.tot["client"].sent != 0 {
		t.Errorf("late client's first call: sent=%d, want 0", c.tot["client"].sent)
	}
	if _, err := cc.Write(make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, sc, 3000)
	cc.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, sc)
	sc.Close()
	io.Copy(io.Discard, cc)
	cc.Close()
	for i := 0; i < 5; i++ {
		exchange(t, p, ln, 100, 0, false)
		c.poll()
	}
	var phase1 uint64
	for i := 0; i < 20; i++ {
		phase1 += uint64(1000 * (i + 1))
	}
	all := phase1 + 5000 + 3000 + 500
	for _, o := range []*observer{a, b} {
		o.waitFor("all 26 close records", func(tot map[string]*kTotals) bool { return tot["client"].closedSeen == 26 })
		if got := o.tot["client"].sent; got != all {
			t.Errorf("client %s: sent=%d, want %d", o.client, got, all)
		}
		if got := o.tot["client"].opened; got != 26 {
			t.Errorf("client %s: opened=%d, want 26", o.client, got)
		}
	}
	c.waitFor("6 close records", func(tot map[string]*kTotals) bool { return tot["client"].closedSeen == 6 })
	if got := c.tot["client"].sent; got != 3000+500 {
		t.Errorf("late client: sent=%d, want %d (only what followed its first call)", got, 3000+500)
	}
	if got := c.tot["client"].opened; got != 5 {
		t.Errorf("late client: opened=%d, want 5", got)
	}
}

// Test 6: a connection opened before the tracer started is reported.
func TestPreexistingConnection(t *testing.T) {
	nettest.RequireRoot(t)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	cc, sc := exchange(t, p, ln, 4444, 333, true) // before the tracer
	defer cc.Close()
	defer sc.Close()
	tr := newTestTracer(t, nil)
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	if o.tot["client"].preexisting != 1 || o.tot["server"].preexisting != 1 {
		t.Fatalf("pre-existing connection not found at start-up: %s", o.dump())
	}
	if _, err := cc.Write(make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, sc, 2000)
	o.waitFor("traffic after start-up", func(tot map[string]*kTotals) bool {
		return tot["client"].sent == 2000 && tot["server"].recv == 2000
	})
	cc.Close()
	io.Copy(io.Discard, sc)
	sc.Close()
	o.waitFor("close records", func(tot map[string]*kTotals) bool {
		return tot["client"].closedSeen == 1 && tot["server"].closedSeen == 1
	})
	checkTotals(t, o, "client", 2000, 0)
	checkTotals(t, o, "server", 0, 2000)
	if tt := o.tot["client"]; tt.opened != 0 || tt.closed != 1 {
		t.Errorf("pre-existing: opened=%d closed=%d, want 0 1 (it opened before we watched)", tt.opened, tt.closed)
	}
}

// The tracked-connection limit: connections beyond it are counted in
// conntrace_lost_total{reason="tracked_connections_full"}, one each, and the
// tracer keeps working.
func TestTrackedLimitCountsWhatDoesNotFit(t *testing.T) {
	const limit = 40
	tr := newTestTracer(t, func(c *Config) { c.MaxTrackedConnections = limit })
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	before := tr.Stats()
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	const conns = 50 // 100 ends
	var open []net.Conn
	for i := 0; i < conns; i++ {
		cc, sc := exchange(t, p, ln, 10, 0, true)
		open = append(open, cc, sc)
	}
	o.poll()
	after := tr.Stats()
	visible := len(o.tot["client"].conns) + len(o.tot["server"].conns)
	lost := after.Lost[LostTrackedConnectionsFull] - before.Lost[LostTrackedConnectionsFull]
	if after.TrackedConnections != limit {
		t.Errorf("tracked %d with %d ends open, want the limit %d", after.TrackedConnections, 2*conns, limit)
	}
	if uint64(visible)+lost != 2*conns {
		t.Errorf("traced %d ends + lost %d = %d, want %d (every end either traced or counted; other traffic on the host breaks this)",
			visible, lost, uint64(visible)+lost, 2*conns)
	}
	if lost == 0 {
		t.Error("nothing counted as lost past the limit")
	}
	for _, c := range open {
		c.Close()
	}
	o.waitFor("tracked count back down", func(map[string]*kTotals) bool {
		return tr.Stats().TrackedConnections <= before.TrackedConnections
	})
}

// Many open connections fill the iterator's buffer several times over:
// every one must still be read, once (a socket whose record did not fit is
// shown again at the next read and must not be skipped).
func TestManyOpenConnectionsAllReadOnce(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	const conns = 400 // 800 records of 256 bytes: 200 KiB
	for i := 0; i < conns; i++ {
		cc, sc := exchange(t, p, ln, 10, 0, true)
		t.Cleanup(func() { cc.Close(); sc.Close() })
	}
	ends := pairEnds(p, false, port)
	for read := 0; read < 3; read++ {
		got, err := tr.DebugNetworkMaps()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[ConnKey]int{}
		for i := range got.Conns {
			c := &got.Conns[i]
			if ends["client"].match(c) || ends["server"].match(c) {
				seen[c.Key]++
			}
		}
		if len(seen) != 2*conns {
			t.Errorf("read %d: %d of %d connection ends", read, len(seen), 2*conns)
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("read %d: %s reported %d times", read, k, n)
			}
		}
	}
}

// The tracer's health after real traffic: every program named with its hook,
// runs counted while the kernel's statistics are on, occupancy following
// the open connections.
func TestHealthAfterTraffic(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) { c.BPFStats = true })
	p := nettest.NewPair(t)
	ln, _ := listen(t, p, false)
	before := map[string]uint64{}
	for _, ps := range tr.Stats().Programs {
		before[ps.Program] = ps.Runs
	}
	base := tr.Stats().TrackedConnections
	var open []net.Conn
	for i := 0; i < 5; i++ {
		cc, sc := exchange(t, p, ln, 100, 100, true)
		open = append(open, cc, sc)
	}
	if _, err := tr.GetActiveConnections("health"); err != nil {
		t.Fatal(err)
	}
	st := tr.Stats()
	if st.TrackedConnections < base+10 {
		t.Errorf("tracked %d with 10 more ends open, was %d", st.TrackedConnections, base)
	}
	hooks := map[string]string{}
	for _, ps := range st.Programs {
		hooks[ps.Program] = ps.Hook
		if !ps.Enabled {
			t.Errorf("%s: statistics not enabled", ps.Program)
		}
	}
	dump, dumpHook := "dump_conns", "task_file"
	if tr.tcpIter == TCPIteratorTCP {
		dump, dumpHook = "dump_conns_tcp", "tcp, in each network namespace"
	}
	for prog, hook := range map[string]string{"handle_set_state": "sock/inet_sock_set_state", "handle_sockops": "cgroup ", dump: dumpHook, "dns_ingress": "cgroup "} {
		if !strings.HasPrefix(hooks[prog], hook) {
			t.Errorf("%s hook %q, want %q…", prog, hooks[prog], hook)
		}
	}
	for _, ps := range st.Programs {
		switch ps.Program {
		case "handle_set_state", "handle_sockops", "dump_conns", "dump_conns_tcp", "handle_send_length", "handle_recv_length", "dns_ingress":
			if ps.Runs <= before[ps.Program] || ps.RunTime <= 0 {
				t.Errorf("%s: runs %d (before %d), run time %s after traffic", ps.Program, ps.Runs, before[ps.Program], ps.RunTime)
			}
		}
	}
	for _, c := range open {
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for tr.Stats().TrackedConnections > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := tr.Stats().TrackedConnections; got > base {
		t.Errorf("tracked %d after closing, want back to %d", got, base)
	}
}
