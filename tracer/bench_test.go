package tracer

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/go-kit/log"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/bpf"
	"github.com/conntrace/conntrace_exporter/filter"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// These benchmarks load the real programs and open real connections between
// two network namespaces (root only). See BENCHMARKS.md for how to run them
// and for figures.

// raiseNofile makes sure the process may hold at least n descriptors, and
// restores the previous limits at the end of the benchmark.
func raiseNofile(b *testing.B, n uint64) {
	b.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		b.Fatalf("getrlimit: %v", err)
	}
	if old.Cur >= n {
		return
	}
	lim := unix.Rlimit{Cur: n, Max: old.Max}
	if lim.Max < n {
		lim.Max = n // root may raise the hard limit up to fs.nr_open
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("setrlimit(RLIMIT_NOFILE, %d): %v", n, err)
	}
	b.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
}

// The hard RLIMIT_NOFILE may be below the 20,000 descriptors both ends of
// 10,000 connections need, and raising it needs CAP_SYS_RESOURCE. So the
// server ends live in a child process, the test binary run again as an fd
// holder: it receives descriptors over a unix socket (SCM_RIGHTS) and holds
// them until the socket closes. That is also the usual shape of a host: the
// iterator walks the files of several processes.
const fdHolderEnv = "CONNTRACE_BENCH_FDHOLDER"

func init() {
	if os.Getenv(fdHolderEnv) == "1" {
		os.Exit(runFDHolder(3))
	}
}

// runFDHolder receives descriptors on the SOCK_SEQPACKET socket sock: a
// message "F" carries descriptors to hold; "Q" asks how many are held (the
// answer is the count in decimal). It returns when the socket closes.
func runFDHolder(sock int) int {
	var held []int
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4*fdBatch))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fd holder: recvmsg: %v\n", err)
			return 1
		}
		if n == 0 {
			return 0 // the benchmark closed the socket: closing everything
		}
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				fmt.Fprintf(os.Stderr, "fd holder: %v\n", err)
				return 1
			}
			for _, m := range msgs {
				fds, err := unix.ParseUnixRights(&m)
				if err != nil {
					fmt.Fprintf(os.Stderr, "fd holder: %v\n", err)
					return 1
				}
				held = append(held, fds...)
			}
		}
		if buf[0] == 'Q' {
			if _, err := unix.Write(sock, []byte(strconv.Itoa(len(held)))); err != nil {
				return 1
			}
		}
	}
}

// fdBatch is the descriptors per message (the kernel's SCM_MAX_FD is 253).
const fdBatch = 200

// fdHolder is the parent's side of a holder process.
type fdHolder struct {
	sock int
	cmd  *exec.Cmd
}

func startFDHolder(b *testing.B) *fdHolder {
	b.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatalf("socketpair: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	child := os.NewFile(uintptr(pair[1]), "fdholder")
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fdHolderEnv+"=1")
	cmd.ExtraFiles = []*os.File{child} // fd 3
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting the fd holder: %v", err)
	}
	child.Close()
	h := &fdHolder{sock: pair[0], cmd: cmd}
	b.Cleanup(func() {
		unix.Close(h.sock)
		h.cmd.Wait()
	})
	return h
}

// give sends the descriptors of conns to the holder and closes them here.
func (h *fdHolder) give(conns []net.Conn) error {
	fds := make([]int, 0, len(conns))
	for _, c := range conns {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			return err
		}
		rc.Control(func(fd uintptr) { fds = append(fds, int(fd)) })
	}
	if err := unix.Sendmsg(h.sock, []byte("F"), unix.UnixRights(fds...), nil, 0); err != nil {
		return fmt.Errorf("sending %d descriptors: %w", len(fds), err)
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// held asks the holder how many descriptors it holds: once it answers, every
// descriptor sent before is in its table.
func (h *fdHolder) held() (int, error) {
	if err := unix.Sendmsg(h.sock, []byte("Q"), nil, nil, 0); err != nil {
		return 0, err
	}
	buf := make([]byte, 32)
	n, err := unix.Read(h.sock, buf)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(buf[:n]))
}

// setClientSysctls widens the ephemeral port range and lets connect() reuse
// TIME_WAIT ports in the client namespace, so that tens of thousands of
// connections fit in one benchmark.
func setClientSysctls(b *testing.B, p *nettest.Pair) {
	b.Helper()
	if err := p.WidenClientPorts(); err != nil {
		b.Fatalf("client netns sysctls: %v", err)
	}
}

// countEnds counts the connections of conns that belong to the test traffic,
// per end.
func countEnds(conns []ConnectionStats, ends map[string]end) map[string]int {
	n := map[string]int{}
	for i := range conns {
		for name, e := range ends {
			if e.match(&conns[i]) {
				n[name]++
			}
		}
	}
	return n
}

// BenchmarkGetActiveConnections10k measures a scrape's read of the tracer
// with 10,000 open, idle connections between two namespaces (20,000 tracked
// sockets; the client ends held by this process, the server ends by a child,
// see fdHolderEnv):
//
//	full:   Snapshot (iterator + decode + known + UDP + NAT + the drain after
//	        it); the per-client step is netstate's (BenchmarkScrape2000Series)
//	read:   DebugNetworkMaps (iterator + decode + known + UDP + NAT)
//	iter:   the raw iterator read alone (kernel: dump_conns over every task's files)
func BenchmarkGetActiveConnections10k(b *testing.B) {
	const conns = 10_000
	raiseNofile(b, conns+1024)
	tr := newTestTracer(b, nil)
	p := nettest.NewPair(b)
	setClientSysctls(b, p)
	ln, err := p.Listen("tcp", net.JoinHostPort(p.Server4.String(), "0"))
	if err != nil {
		b.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ends := pairEnds(p, false, port)

	holder := startFDHolder(b)
	var (
		mu     sync.Mutex
		dialed []net.Conn
	)
	b.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range dialed {
			c.Close()
		}
	})
	// Server ends: accepted here, handed to the holder by batches.
	acceptDone := make(chan error, 1)
	go func() {
		batch := make([]net.Conn, 0, fdBatch)
		for i := 0; i < conns; i++ {
			c, err := ln.Accept()
			if err != nil {
				acceptDone <- fmt.Errorf("accept %d: %w", i, err)
				return
			}
			batch = append(batch, c)
			if len(batch) == fdBatch || i == conns-1 {
				if err := holder.give(batch); err != nil {
					acceptDone <- err
					return
				}
				batch = batch[:0]
			}
		}
		acceptDone <- nil
	}()
	// Client ends: one OS thread in the client namespace dials them all.
	err = nettest.Do(p.Client, func() error {
		for i := 0; i < conns; i++ {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return fmt.Errorf("dial %d: %w", i, err)
			}
			mu.Lock()
			dialed = append(dialed, c)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-acceptDone:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		b.Fatal("timed out accepting the connections")
	}
	if n, err := holder.held(); err != nil || n != conns {
		b.Fatalf("the fd holder holds %d descriptors (%v), want %d", n, err, conns)
	}

	// Every end must be returned.
	check := func(b *testing.B, got []ConnectionStats) int {
		b.Helper()
		n := countEnds(got, ends)
		if n["client"] != conns || n["server"] != conns {
			b.Fatalf("%d client and %d server ends of the test connections returned (of %d records), want %d each",
				n["client"], n["server"], len(got), conns)
		}
		return n["client"] + n["server"]
	}

	b.Run("full", func(b *testing.B) {
		tr.SetSink(&countingSink{})
		loopReads(b, func() (*Connections, error) {
			s, err := tr.Snapshot()
			if err != nil {
				return nil, err
			}
			defer s.Release()
			out := &Connections{Conns: make([]ConnectionStats, len(s.Conns))}
			for i, c := range s.Conns {
				out.Conns[i] = *c
			}
			return out, nil
		}, check)
	})
	b.Run("read", func(b *testing.B) {
		loopReads(b, tr.DebugNetworkMaps, check)
	})
	b.Run("iter", func(b *testing.B) {
		b.ReportAllocs()
		var size int
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			tr.mu.Lock()
			err := tr.readIterator(tr.dumpIter, tr.tcpIter == TCPIteratorTCP, &buf) // iter/tcp: one per network namespace
			tr.mu.Unlock()
			if err != nil {
				b.Fatal(err)
			}
			size = buf.Len()
		}
		b.Logf("TCP iterator: %s", tr.tcpIter)
		b.ReportMetric(float64(size), "bytes/read")
	})
}

// progStats is a snapshot of the kernel's statistics of the tracer's programs.
type progStats map[string]ebpf.ProgramStats

func (tr *Tracer) benchPrograms() map[string]*ebpf.Program {
	return map[string]*ebpf.Program{
		"set_state":      tr.objs.HandleSetState,
		"destroy_sock":   tr.objs.HandleDestroySock,
		"sockops":        tr.objs.HandleSockops,
		"send_length":    tr.objs.HandleSendLength,
		"recv_length":    tr.objs.HandleRecvLength,
		"dns_ingress":    tr.objs.DnsIngress,
		"dns_egress":     tr.objs.DnsEgress,
		"dump_conns":     tr.objs.DumpConns,
		"dump_conns_tcp": tr.objs.DumpConnsTcp,
	}
}

func readProgStats(b *testing.B, tr *Tracer) progStats {
	b.Helper()
	s := progStats{}
	for name, prog := range tr.benchPrograms() {
		if prog == nil {
			continue // not this kernel's (dump_conns where iter/tcp reads TCP)
		}
		st, err := prog.Stats()
		if err != nil {
			b.Fatalf("stats of %s: %v", name, err)
		}
		s[name] = *st
	}
	return s
}

func (s progStats) sub(o progStats) progStats {
	d := progStats{}
	for name, st := range s {
		d[name] = ebpf.ProgramStats{
			Runtime:         st.Runtime - o[name].Runtime,
			RunCount:        st.RunCount - o[name].RunCount,
			RecursionMisses: st.RecursionMisses - o[name].RecursionMisses,
		}
	}
	return d
}

// BenchmarkProgramRunCost runs short-lived connections (100 bytes each way,
// orderly close) between two namespaces with kernel BPF statistics enabled,
// and reports the mean run time of each program (ns/run) and how often each
// runs per connection (runs/conn). dump_conns runs on scrapes only: after the
// loop, 10 scrapes measure it (runs/scrape: one run per open file of every
// task). The programs are global (tracepoints, root cgroup): other TCP
// activity on the host runs them too; bg_runs/s is their rate over an idle
// second before the loop, the error it adds to runs/conn.
//
// kernel.bpf_stats_enabled itself adds two clock reads and a per-CPU update
// to every run of every BPF program on the host while the benchmark runs.
func BenchmarkProgramRunCost(b *testing.B) {
	benchmarkProgramRunCost(b, nil)
}

// BenchmarkProgramRunCostExcluded is BenchmarkProgramRunCost with the
// benchmark's traffic excluded by a destination filter: what a filtered
// connection still costs (the filter is checked in the kernel, the
// connection never tracked).
func BenchmarkProgramRunCostExcluded(b *testing.B) {
	f, err := filter.NewConnectionFilters(nil, map[string][]string{"198.18.0.0/24": {"tcp *"}}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	benchmarkProgramRunCost(b, f)
}

func benchmarkProgramRunCost(b *testing.B, filters *filter.ConnectionFilters) {
	tr := newTestTracer(b, func(c *Config) { c.Filters = filters })
	p := nettest.NewPair(b)
	setClientSysctls(b, p)
	ln, err := p.Listen("tcp", net.JoinHostPort(p.Server4.String(), "0"))
	if err != nil {
		b.Fatalf("listen: %v", err)
	}
	defer ln.Close()

	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("enabling BPF run-time statistics: %v", err)
	}
	statsOpen := true
	defer func() {
		if statsOpen {
			stats.Close()
		}
	}()

	const size = 100
	go func() { // server: read 100, answer 100, read to EOF, close
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, size)
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()

	// A goroutine locked in the client namespace dials on request.
	type dialed struct {
		c   net.Conn
		err error
	}
	reqs := make(chan struct{})
	resps := make(chan dialed)
	dialerDone := make(chan error, 1)
	go func() {
		dialerDone <- nettest.Do(p.Client, func() error {
			for range reqs {
				c, err := net.Dial("tcp", ln.Addr().String())
				resps <- dialed{c, err}
			}
			return nil
		})
	}()
	defer func() { close(reqs); <-dialerDone }()

	// Background: what runs the programs without our traffic.
	bg0, bgStart := readProgStats(b, tr), time.Now()
	time.Sleep(time.Second)
	bg, bgTime := readProgStats(b, tr).sub(bg0), time.Since(bgStart)

	buf := make([]byte, size)
	before := readProgStats(b, tr)
	n := 0
	for b.Loop() {
		reqs <- struct{}{}
		d := <-resps
		if d.err != nil {
			b.Fatalf("dial: %v", d.err)
		}
		if _, err := d.c.Write(buf); err != nil {
			b.Fatalf("write: %v", err)
		}
		if _, err := io.ReadFull(d.c, buf); err != nil {
			b.Fatalf("read: %v", err)
		}
		d.c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, d.c) // the server's FIN
		d.c.Close()
		n++
	}
	// The server end's last state changes follow our close: let them land.
	time.Sleep(100 * time.Millisecond)
	loop := readProgStats(b, tr).sub(before)

	const scrapes = 10
	before = readProgStats(b, tr)
	for i := 0; i < scrapes; i++ {
		if _, err := tr.GetActiveConnections("bench"); err != nil {
			b.Fatal(err)
		}
	}
	scr := readProgStats(b, tr).sub(before)
	if err := stats.Close(); err != nil {
		b.Errorf("disabling BPF statistics: %v", err)
	}
	statsOpen = false

	var bgRuns, totalNs uint64
	// send_length and recv_length run on every send and receive call of
	// every socket (they count UDP; a TCP socket leaves at once).
	// dns_ingress runs on every packet delivered to a socket.
	// dns_egress runs on every packet a socket sends.
	for _, name := range []string{"set_state", "destroy_sock", "sockops", "send_length", "recv_length", "dns_ingress", "dns_egress"} {
		st := loop[name]
		bgRuns += bg[name].RunCount
		totalNs += uint64(st.Runtime)
		if st.RunCount == 0 {
			b.Errorf("%s never ran during %d connections", name, n)
			continue
		}
		b.ReportMetric(float64(st.Runtime.Nanoseconds())/float64(st.RunCount), name+"_ns/run")
		b.ReportMetric(float64(st.RunCount)/float64(n), name+"_runs/conn")
		if st.RecursionMisses > 0 {
			b.ReportMetric(float64(st.RecursionMisses), name+"_recursion_misses")
		}
	}
	b.ReportMetric(float64(totalNs)/float64(n), "bpf_ns/conn")
	b.ReportMetric(float64(bgRuns)/bgTime.Seconds(), "bg_runs/s")
	dump := "dump_conns" // the task_file way, else iter/tcp's
	if tr.tcpIter == TCPIteratorTCP {
		dump = "dump_conns_tcp"
	}
	if st := scr[dump]; st.RunCount > 0 {
		b.ReportMetric(float64(st.Runtime.Nanoseconds())/float64(st.RunCount), dump+"_ns/run")
		b.ReportMetric(float64(st.RunCount)/scrapes, dump+"_runs/scrape")
	} else {
		b.Errorf("%s never ran during %d scrapes", dump, scrapes)
	}
}

// loopReads times read and reports what the last one returned.
func loopReads(b *testing.B, read func() (*Connections, error), check func(*testing.B, []ConnectionStats) int) {
	b.ReportAllocs()
	var last *Connections
	var err error
	for b.Loop() {
		if last, err = read(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(check(b, last.Conns)), "conns")
	b.ReportMetric(float64(len(last.Conns)), "records")
}

// BenchmarkConntrackDump measures one dump of a namespace's conntrack table
// as the tracer does it (both families, into the translation table): the
// cost a dump adds, at most once per --tracer.conntrack-interval. The
// table holds plain (not NATed) entries, created over netlink, and 100
// NATed ones, from real connections through a DNAT rule. "filtered" is the
// kernel sending the NATed entries only (Linux 5.15); "whole" is what a
// kernel that ignores the filter sends, every entry parsed.
func BenchmarkConntrackDump(b *testing.B) {
	const natted = 100
	for _, plain := range []int{0, 10000, 100000} {
		for _, mode := range []string{"filtered", "whole"} {
			b.Run(fmt.Sprintf("plain=%d/%s", plain, mode), func(b *testing.B) {
				nettest.RequireRoot(b)
				p := nettest.NewPair(b)
				ns := conntrackTable(b, p, plain, natted)
				cfg := NewDefaultConfig()
				cfg.ConntrackMaxStateSize = 4 * natted
				ct, err := newConntracker(cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer ct.close()
				dumpNS := map[uint32]struct{}{ns: {}}
				ct.statusFilter = filterUnknown // whether or not this host has IPVS
				b.ReportAllocs()
				for b.Loop() {
					if mode == "whole" {
						ct.statusFilter = filterWhole
					}
					ct.dump(dumpNS, dumpNS, time.Now())
				}
				if got := len(ct.tables[ns]); got != 2*natted || ct.errors != 0 {
					b.Fatalf("%d translations (%d errors), want %d", got, ct.errors, 2*natted)
				}
				b.ReportMetric(float64(ct.parsed)/float64(b.N), "entries/op")
			})
		}
	}
}

// conntrackTable fills the conntrack table of p's client namespace with
// plain UDP entries (created over netlink, no traffic) and natted TCP
// connections through a DNAT rule (real ones: only the kernel's NAT sets
// an entry's NAT status), and returns the namespace's inode.
func conntrackTable(b *testing.B, p *nettest.Pair, plain, natted int) uint32 {
	b.Helper()
	nft(b, p.ClientName, dnatRules)
	ln, err := p.Listen("tcp", "198.18.0.2:8080")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	for range natted {
		exchangeTo(b, p, ln, "198.18.0.100:80", 1, 1, false)
	}
	c, err := conntrack.Dial(&mdnetlink.Config{NetNS: int(p.Client)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for i := range plain {
		src := netip.AddrFrom4([4]byte{198, 18, byte(100 + i/60000), 1})
		dst := netip.AddrFrom4([4]byte{198, 18, 201, byte(i%250 + 1)})
		f := conntrack.NewFlow(unix.IPPROTO_UDP, 0, src, dst, uint16(1024+i%60000), 53, 600, 0)
		if err := c.Create(f); err != nil {
			b.Fatalf("creating conntrack entry %d: %v", i, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(p.Client), &st); err != nil {
		b.Fatal(err)
	}
	return uint32(st.Ino)
}

// BenchmarkUDPHookCost: one 64-byte datagram sent on a connected UDP socket
// and read on loopback, per op, with no tracer and with the tracer forced to
// each UDP hook this kernel offers. What a hook costs is its ns/op minus
// none's; under QEMU (TCG) only the ratios between hooks mean anything
// (BENCHMARKS.md).
func BenchmarkUDPHookCost(b *testing.B) {
	nettest.RequireRoot(b)
	run := func(b *testing.B) {
		srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		c, err := net.Dial("udp4", srv.LocalAddr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		msg, buf := make([]byte, 64), make([]byte, 128)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, _, err := srv.ReadFrom(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("none", run)
	for _, hook := range udpHooks {
		if err := UDPHookPossible(hook); err != nil {
			b.Logf("%s: %v", hook, err)
			continue
		}
		b.Run(hook, func(b *testing.B) {
			newTestTracer(b, func(c *Config) {
				c.UDPHook = hook
				c.CollectTCPConns = false
				c.DNSInspection = false
			})
			run(b)
		})
	}
}

// countingSink counts what the drain hands over.
type countingSink struct{ n int }

func (s *countingSink) Closed(conns []ConnectionStats) { s.n += len(conns) }
func (s *countingSink) Clients() int                   { return 1 }

// BenchmarkDrainRecord measures the drain's user-space cost per closed
// connection, the state's fold excluded (netstate's BenchmarkFold): decode
// one ring buffer record, mark it closed in known, hand it to the sink in
// batches of drainBatch. No kernel: the records are made here. With
// conntrack the NAT lookup adds a map lookup (or a wait for the next dump).
func BenchmarkDrainRecord(b *testing.B) {
	t := &Tracer{cfg: NewDefaultConfig(), known: newKnown(1 << 17), drainComms: comms{}, logger: log.NewNopLogger()}
	sink := &countingSink{}
	t.SetSink(sink)
	raw := make([][]byte, drainBatch)
	for i := range raw {
		r := bpf.ConntraceConnRecord{Cookie: uint64(i + 1), Family: afInet, Flags: connEstablished | connClosed, SentBytes: 100, RecvBytes: 100, Dport: 443, Sport: uint16(30000 + i)}
		copy(r.Comm[:], []int8{'c', 'u', 'r', 'l'})
		raw[i] = append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&r)), recordSize)...)
	}
	now := time.Now()
	batch := make([]ConnectionStats, 0, drainBatch)
	recs := make([]bpf.ConntraceConnRecord, 0, drainBatch)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		batch, recs = t.takeRecord(batch, recs, raw[n%drainBatch])
		n++
		if len(batch) == drainBatch {
			t.settle(batch, recs, now)
			batch, recs = batch[:0], recs[:0]
		}
	}
	if sink.n == 0 && n >= drainBatch {
		b.Fatal("nothing reached the sink")
	}
}
