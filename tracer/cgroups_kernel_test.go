package tracer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/conntrace/conntrace_exporter/cgroup"
	"github.com/conntrace/conntrace_exporter/filter"
	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// The workloads of these tests are cgroups the test makes under the cgroup
// v2 root, shaped as a systemd service, a docker container and a pod's
// container. A process started in one (clone3 CLONE_INTO_CGROUP) makes
// sockets and hands them over: the kernel keeps the cgroup of the process
// that made a socket with the socket, so the connections the test then
// runs on them are that workload's, exactly as a workload's own would be.

// socketMakerEnv makes the test binary a socket maker (runSocketMaker).
const socketMakerEnv = "CONNTRACE_TEST_SOCKET_MAKER"

func init() {
	if spec := os.Getenv(socketMakerEnv); spec != "" {
		os.Exit(runSocketMaker(spec))
	}
}

// runSocketMaker makes one socket per item of spec ("c:tcp4": in the
// client namespace (fd 4; "s": the server's, fd 5), TCP over IPv4) and
// sends them all, in order, on the unix socket at fd 3.
func runSocketMaker(spec string) int {
	runtime.LockOSThread() // setns is per thread; this one exits with the process
	var fds []int
	for _, item := range strings.Split(spec, ",") {
		ns, kind, _ := strings.Cut(item, ":")
		nsfd := 4
		if ns == "s" {
			nsfd = 5
		}
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			fmt.Fprintf(os.Stderr, "socket maker: setns: %v\n", err)
			return 1
		}
		domain, typ := unix.AF_INET, unix.SOCK_STREAM
		if strings.HasSuffix(kind, "6") {
			domain = unix.AF_INET6
		}
		if strings.HasPrefix(kind, "udp") {
			typ = unix.SOCK_DGRAM
		}
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintf(os.Stderr, "socket maker: socket %s: %v\n", item, err)
			return 1
		}
		fds = append(fds, fd)
	}
	if err := unix.Sendmsg(3, []byte("S"), unix.UnixRights(fds...), nil, 0); err != nil {
		fmt.Fprintf(os.Stderr, "socket maker: sendmsg: %v\n", err)
		return 1
	}
	return 0
}

// testCgroupRoot is the directory of the cgroup v2 hierarchy the tracer
// names cgroups under.
func testCgroupRoot(t *testing.T) string {
	t.Helper()
	mnt, err := findCgroup2Mount("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return cgroupRoot(mnt)
}

// makeCgroup makes the cgroup rel (and its parents) under root, removed
// (deepest first) when the test ends, if still there.
func makeCgroup(t *testing.T, root, rel string) {
	t.Helper()
	dir := filepath.Join(root, rel)
	var made []string
	for d := dir; d != root; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("making cgroup %s: %v", dir, err)
	}
	t.Cleanup(func() {
		for _, d := range made {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Errorf("removing cgroup %s: %v", d, err)
			}
		}
	})
}

// socketsIn starts a process in the cgroup at dir that makes the sockets
// of spec (runSocketMaker) and exits; it returns them.
func socketsIn(t *testing.T, dir string, p *nettest.Pair, spec string) []int {
	t.Helper()
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	child := os.NewFile(uintptr(pair[1]), "socket-maker")
	defer child.Close()
	var nsFiles []*os.File
	for _, ns := range []int{int(p.Client), int(p.Server)} {
		fd, err := unix.Dup(ns)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "netns")
		defer f.Close()
		nsFiles = append(nsFiles, f)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), socketMakerEnv+"="+spec)
	cmd.ExtraFiles = []*os.File{child, nsFiles[0], nsFiles[1]} // fds 3, 4, 5
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if err := cmd.Run(); err != nil {
		t.Fatalf("socket maker in %s: %v", dir, err)
	}
	want := strings.Count(spec, ",") + 1
	oob := make([]byte, unix.CmsgSpace(4*want))
	_, oobn, _, _, err := unix.Recvmsg(pair[0], make([]byte, 1), oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatalf("receiving the sockets: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receiving the sockets: %d messages, %v", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != want {
		t.Fatalf("received %d sockets, want %d: %v", len(fds), want, err)
	}
	return fds
}

func sockaddr4(a netip.AddrPort) unix.Sockaddr {
	return &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}
}

// fileOf turns a socket descriptor into its net type (the descriptor is
// closed: the net value holds a duplicate).
func fileOf[T any](t *testing.T, fd int, conv func(*os.File) (T, error)) T {
	t.Helper()
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	v, err := conv(f)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// workload is a test cgroup, with the sockets a process in it made: a TCP
// client and server, a UDP client and server (IPv4).
type workload struct {
	name, rel string
	want      cgroup.Info
	id        uint64
	tcpClient int
	tcpServer net.Listener
	udpClient int
	udpServer net.PacketConn
	tcpPort   uint16 // its servers' ports
	udpPort   uint16
}

// testWorkloads are three workloads under a test cgroup of its own.
func testWorkloads(top string) []*workload {
	b := make([]byte, 64)
	rand.Read(b)
	docker, pod := hex.EncodeToString(b[:32]), hex.EncodeToString(b[32:])
	uid := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	podSlice := "kubepods-burstable-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
	return []*workload{
		{name: "service", rel: top + "/system.slice/ct-web.service",
			want: cgroup.Info{Unit: "ct-web.service"}},
		{name: "docker", rel: top + "/system.slice/docker-" + docker + ".scope",
			want: cgroup.Info{Unit: "docker-" + docker + ".scope", ContainerID: docker}},
		{name: "pod", rel: top + "/kubepods.slice/kubepods-burstable.slice/" + podSlice + "/cri-containerd-" + pod + ".scope",
			want: cgroup.Info{Unit: "cri-containerd-" + pod + ".scope", ContainerID: pod, PodUID: uid}},
	}
}

// start makes the workload's cgroup and sockets, and its servers listen.
func (w *workload) start(t *testing.T, root string, p *nettest.Pair, port uint16) {
	t.Helper()
	makeCgroup(t, root, w.rel)
	w.want.Path = w.rel
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, w.rel), &st); err != nil {
		t.Fatal(err)
	}
	w.id = st.Ino
	fds := socketsIn(t, filepath.Join(root, w.rel), p, "c:tcp4,s:tcp4,c:udp4,s:udp4")
	w.tcpClient, w.udpClient = fds[0], fds[2]
	w.tcpPort, w.udpPort = port, port+1
	if err := unix.Bind(fds[1], sockaddr4(netip.AddrPortFrom(p.Server4, w.tcpPort))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fds[1], 8); err != nil {
		t.Fatal(err)
	}
	w.tcpServer = fileOf(t, fds[1], net.FileListener)
	t.Cleanup(func() { w.tcpServer.Close() })
	if err := unix.Bind(fds[3], sockaddr4(netip.AddrPortFrom(p.Server4, w.udpPort))); err != nil {
		t.Fatal(err)
	}
	w.udpServer = fileOf(t, fds[3], net.FilePacketConn)
	t.Cleanup(func() { w.udpServer.Close() })
	go func() { // answers each datagram with half its size, plus one
		buf := make([]byte, 65536)
		for {
			n, from, err := w.udpServer.ReadFrom(buf)
			if err != nil {
				return
			}
			w.udpServer.WriteTo(bytes.Repeat([]byte{'u'}, n/2+1), from)
		}
	}()
}

// talk is the traffic of one workload's clients to another's servers.
type talk struct {
	from, to         *workload
	tcpSent, tcpRecv uint64
	udpSent, udpRecv uint64
	cc, sc           net.Conn // the TCP connection, open between halves
}

// tcpHalf moves n bytes from the client to the server and m back on the
// TCP connection, opening it the first time.
func (k *talk) tcpHalf(t *testing.T, p *nettest.Pair, n, m int) {
	t.Helper()
	if k.cc == nil {
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := k.to.tcpServer.Accept()
			if err != nil {
				t.Error(err)
			}
			accepted <- c
		}()
		if err := unix.Connect(k.from.tcpClient, sockaddr4(netip.AddrPortFrom(p.Server4, k.to.tcpPort))); err != nil {
			t.Fatalf("connect: %v", err)
		}
		k.cc = fileOf(t, k.from.tcpClient, net.FileConn)
		if k.sc = <-accepted; k.sc == nil {
			t.FailNow()
		}
	}
	if _, err := k.cc.Write(bytes.Repeat([]byte{'c'}, n)); err != nil {
		t.Fatal(err)
	}
	if got, err := io.CopyN(io.Discard, k.sc, int64(n)); err != nil || got != int64(n) {
		t.Fatalf("server read %d of %d: %v", got, n, err)
	}
	if _, err := k.sc.Write(bytes.Repeat([]byte{'s'}, m)); err != nil {
		t.Fatal(err)
	}
	if got, err := io.CopyN(io.Discard, k.cc, int64(m)); err != nil || got != int64(m) {
		t.Fatalf("client read %d of %d: %v", got, m, err)
	}
	k.tcpSent += uint64(n)
	k.tcpRecv += uint64(m)
}

// tcpClose closes the connection in order: FINs both ways.
func (k *talk) tcpClose() {
	k.cc.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, k.sc)
	k.sc.Close()
	io.Copy(io.Discard, k.cc)
	k.cc.Close()
}

// udp sends a datagram of each size to the server and reads the answers.
func (k *talk) udp(t *testing.T, p *nettest.Pair, sizes ...int) {
	t.Helper()
	if err := unix.Connect(k.from.udpClient, sockaddr4(netip.AddrPortFrom(p.Server4, k.to.udpPort))); err != nil {
		t.Fatalf("connect: %v", err)
	}
	c := fileOf(t, k.from.udpClient, net.FileConn)
	defer c.Close()
	s, r := udpAsk(t, c, sizes...)
	k.udpSent += s
	k.udpRecv += r
}

// ends are the four ends of the talk's traffic, named "<from>-><to>/tcp/client".
func (k *talk) ends(p *nettest.Pair, tcp bool) map[string]end {
	name := k.from.name + "->" + k.to.name
	out := map[string]end{}
	if tcp {
		e := pairEnds(p, false, k.to.tcpPort)
		out[name+"/tcp/client"], out[name+"/tcp/server"] = e["client"], e["server"]
	}
	e := udpEnds(p, false, k.to.udpPort)
	out[name+"/udp/client"], out[name+"/udp/server"] = e["client"], e["server"]
	return out
}

// totals are what the talk's ends must count: sent and received, and the
// workload of each.
func (k *talk) totals(tcp bool) map[string]struct {
	sent, recv uint64
	w          *workload
} {
	type want = struct {
		sent, recv uint64
		w          *workload
	}
	name := k.from.name + "->" + k.to.name
	out := map[string]want{
		name + "/udp/client": {k.udpSent, k.udpRecv, k.from},
		name + "/udp/server": {k.udpRecv, k.udpSent, k.to},
	}
	if tcp {
		out[name+"/tcp/client"] = want{k.tcpSent, k.tcpRecv, k.from}
		out[name+"/tcp/server"] = want{k.tcpRecv, k.tcpSent, k.to}
	}
	return out
}

// Each workload's connections carry its cgroup, named with its path,
// unit, container id and pod uid, with exact bytes both ways, TCP and UDP;
// a cgroup removed while its connections are open keeps its name until
// they close.
func TestCgroupOfEachConnection(t *testing.T) {
	nettest.RequireRoot(t)
	root := testCgroupRoot(t)
	eachUDPHook(t, func(c *Config) { c.Cgroups = true }, func(t *testing.T, tr *Tracer) {
		p := nettest.NewPair(t)
		tcp := tr.cfg.CollectTCPConns
		retryOnMiss(t, func(t *testing.T, attempt int) *observer {
			top := fmt.Sprintf("/conntrace-test-%d", time.Now().UnixNano())
			ws := testWorkloads(top)
			for i, w := range ws {
				w.start(t, root, p, uint16(7400+100*attempt+10*i))
			}
			talks := ring(ws)
			o := attemptObserver(t, tr, attempt, talkEnds(p, tcp, talks))
			for i, k := range talks {
				if tcp {
					k.tcpHalf(t, p, 1000*(i+1), 3000*(i+1))
				}
				k.udp(t, p, 100*(i+1), 1400)
			}
			o.waitFor("the first half", func(tot map[string]*kTotals) bool {
				for _, k := range talks {
					for n, w := range k.totals(tcp) {
						if tot[n].sent != w.sent || tot[n].recv != w.recv {
							return false
						}
					}
				}
				return true
			})
			if o.missed {
				checkTalksAtMost(t, o, tcp, talks)
				return o
			}
			// The cgroups go while the TCP connections stay open: their
			// processes left long ago (the socket makers exited).
			for i := len(ws) - 1; i >= 0; i-- {
				if err := os.Remove(filepath.Join(root, ws[i].rel)); err != nil {
					t.Fatalf("removing cgroup %s: %v", ws[i].rel, err)
				}
			}
			time.Sleep(300 * time.Millisecond)
			o.poll() // drains the rmdir events
			for i, k := range talks {
				if tcp {
					k.tcpHalf(t, p, 777*(i+1), 555*(i+1))
					k.tcpClose()
				}
			}
			o.waitFor("every byte and close", func(tot map[string]*kTotals) bool {
				for _, k := range talks {
					for n, w := range k.totals(tcp) {
						if tot[n].sent != w.sent || tot[n].recv != w.recv || strings.Contains(n, "/tcp/") && tot[n].closedSeen != 1 {
							return false
						}
					}
				}
				return true
			})
			if o.missed {
				checkTalksAtMost(t, o, tcp, talks)
				return o
			}
			for _, k := range talks {
				for n, w := range k.totals(tcp) {
					checkTotals(t, o, n, w.sent, w.recv)
					tt := o.tot[n]
					if len(tt.cgroups) != 1 || !tt.cgroups[w.w.id] {
						t.Errorf("%s: cgroups %v, want only %s's (%d)", n, tt.cgroups, w.w.name, w.w.id)
					}
				}
			}
			for _, w := range ws {
				got, ok := tr.Cgroup(w.id)
				if !ok || got != w.want {
					t.Errorf("%s (removed): named %+v, %v; want %+v", w.name, got, ok, w.want)
				}
			}
			if s, _ := tr.CgroupStats(); s.Misses != 0 {
				t.Errorf("%d cgroup misses, want none", s.Misses)
			}
			return o
		})
	})
}

// udpToItself starts the workload's sockets (its servers on port and
// port+1) and sends it datagrams of sizes from its own client, then waits
// for the exact bytes at both ends; after a program run the kernel
// skipped (o.missed), it checks that nothing was counted twice instead.
// One attempt of retryOnMiss.
func udpToItself(t *testing.T, tr *Tracer, root string, p *nettest.Pair, w *workload, port uint16, attempt int, sizes ...int) (*observer, *talk) {
	t.Helper()
	w.start(t, root, p, port)
	k := &talk{from: w, to: w}
	o := attemptObserver(t, tr, attempt, k.ends(p, false))
	k.udp(t, p, sizes...)
	o.waitFor("the "+w.name+" workload's UDP bytes", func(tot map[string]*kTotals) bool {
		for n, want := range k.totals(false) {
			if tot[n].sent != want.sent || tot[n].recv != want.recv {
				return false
			}
		}
		return true
	})
	if o.missed {
		checkTalksAtMost(t, o, false, []*talk{k})
	}
	return o, k
}

// ring is each workload talking to the next, the last to the first.
func ring(ws []*workload) []*talk {
	talks := make([]*talk, len(ws))
	for i, w := range ws {
		talks[i] = &talk{from: w, to: ws[(i+1)%len(ws)]}
	}
	return talks
}

// talkEnds are the ends of the talks' traffic, for an observer.
func talkEnds(p *nettest.Pair, tcp bool, talks []*talk) map[string]end {
	ends := map[string]end{}
	for _, k := range talks {
		for n, e := range k.ends(p, tcp) {
			ends[n] = e
		}
	}
	return ends
}

// checkTalksAtMost: after a program run the kernel skipped, each end
// counted at most what the test moved (a miss loses a call's bytes, never
// adds any).
func checkTalksAtMost(t *testing.T, o *observer, tcp bool, talks []*talk) {
	t.Helper()
	for _, k := range talks {
		for n, w := range k.totals(tcp) {
			checkAtMost(t, o, n, w.sent, w.recv)
		}
	}
}

// The cgroup filter: a subtree excluded, a cgroup inside it included
// again, made after start-up (its mkdir event puts it in the table); the
// rest included. An excluded workload's sockets are never tracked; the
// others count exactly.
func TestCgroupFilter(t *testing.T) {
	nettest.RequireRoot(t)
	root := testCgroupRoot(t)
	top := fmt.Sprintf("/conntrace-test-%d", time.Now().UnixNano())
	ws := testWorkloads(top)
	makeCgroup(t, root, top+"/system.slice")
	f := &filter.CgroupFilter{Include: []string{top, ws[1].rel}, Exclude: []string{top + "/system.slice"}}
	// The kernel's default UDP hook alone: the filter is one function for
	// every hook (udp.h), whose cgroup reads TestCgroupOfEachConnection
	// checks on each, and a tracer's start is most of a test's time
	// under QEMU.
	tr := newTestTracer(t, func(c *Config) {
		c.CgroupFilter = f
		c.CollectTCPConns = TCPPossible() == nil
	})
	p := nettest.NewPair(t)
	tcp := tr.cfg.CollectTCPConns
	retryOnMiss(t, func(t *testing.T, attempt int) *observer {
		// The same cgroups each attempt (the filter names them), new
		// sockets.
		for i, w := range ws {
			w.start(t, root, p, uint16(7500+100*attempt+10*i))
		}
		// The docker workload's cgroup was made after start-up: its
		// mkdir event adds it to the table; wait for that.
		deadline := time.Now().Add(5 * time.Second)
		for {
			tr.drainClosed()
			var v uint8
			if tr.objs.CgroupFilter.Lookup(ws[1].id, &v) == nil && v == cgroupInclude {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the included cgroup %s made after start-up is not in the kernel's filter", ws[1].rel)
			}
			time.Sleep(20 * time.Millisecond)
		}
		talks := ring(ws)
		o := attemptObserver(t, tr, attempt, talkEnds(p, tcp, talks))
		for i, k := range talks {
			if tcp {
				k.tcpHalf(t, p, 1000*(i+1), 2000*(i+1))
				k.tcpClose()
			}
			k.udp(t, p, 100*(i+1), 900)
		}
		traced := func(w *workload) bool { return w != ws[0] } // the service is in the excluded slice
		o.waitFor("the traced workloads' bytes", func(tot map[string]*kTotals) bool {
			for _, k := range talks {
				for n, w := range k.totals(tcp) {
					if traced(w.w) && (tot[n].sent != w.sent || tot[n].recv != w.recv) {
						return false
					}
				}
			}
			return true
		})
		time.Sleep(200 * time.Millisecond)
		o.poll()
		for _, k := range talks {
			for n, w := range k.totals(tcp) {
				tt := o.tot[n]
				switch {
				case !traced(w.w):
					// Excluded, missed program runs or not: none.
					if len(tt.conns) != 0 || tt.sent+tt.recv != 0 {
						t.Errorf("%s (%s, excluded): %d connections, %d bytes sent, %d received; want none", n, w.w.name, len(tt.conns), tt.sent, tt.recv)
					}
				case o.missed:
					checkAtMost(t, o, n, w.sent, w.recv)
				default:
					checkTotals(t, o, n, w.sent, w.recv)
					if len(tt.cgroups) != 1 || !tt.cgroups[w.w.id] {
						t.Errorf("%s: cgroups %v, want only %s's (%d)", n, tt.cgroups, w.w.name, w.w.id)
					}
				}
			}
		}
		return o
	})
}

// The filter's edges, with one tracer (its start is most of a test's time
// under QEMU): its cgroups found whatever the names hold, past the depth
// it looks at, and after lost events.
func TestCgroupFilterEdges(t *testing.T) {
	nettest.RequireRoot(t)
	root := testCgroupRoot(t)
	top := fmt.Sprintf("/conntrace-test-%d", time.Now().UnixNano())
	late, excluded, other := top+"/late.service", top+"/excluded.service", top+"/other.service"
	makeCgroup(t, root, excluded)
	makeCgroup(t, root, other)
	existing := 0
	filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			existing++
		}
		return nil
	})
	saved := cgroupNames
	t.Cleanup(func() { cgroupNames = saved })
	cgroupNames.MaxEntries = existing + 2 // a few more cgroups fill the names
	cgroupNames.MinRescan = time.Millisecond
	tr := newTestTracer(t, func(c *Config) {
		c.CgroupFilter = &filter.CgroupFilter{Include: []string{other}, Exclude: []string{late, excluded}}
		c.CollectTCPConns = false // UDP: every kernel of the matrix
	})
	inFilter := func(id uint64, want uint8) bool {
		var v uint8
		return tr.objs.CgroupFilter.Lookup(id, &v) == nil && v == want
	}
	idOf := func(rel string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(root, rel), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}

	// A filtered cgroup made after start-up goes in the kernel's table
	// even when the names cannot hold it (the cache full of live
	// cgroups, as a user's delegated subtree can make it): the filter
	// does not depend on the names' bounds.
	t.Run("names full", func(t *testing.T) {
		for i := range 8 { // more than the room left
			makeCgroup(t, root, fmt.Sprintf("%s/fill-%d.scope", top, i))
		}
		tr.drainClosed()
		makeCgroup(t, root, late)
		id := idOf(late)
		deadline := time.Now().Add(3 * time.Second)
		for tr.drainClosed(); !inFilter(id, cgroupExclude); tr.drainClosed() {
			if time.Now().After(deadline) {
				t.Fatalf("the excluded cgroup %s (%d) made after start-up is not in the kernel's filter", late, id)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if s, _ := tr.CgroupStats(); s.Dropped == 0 {
			t.Errorf("nothing dropped (%+v): the names were not full, this tested nothing", s)
		}
	})

	// The kernel's filter looks 64 levels up (bpf/cgroup.h). A socket
	// deeper than that, whose listed ancestor it does not reach, is
	// traced and counted: a user nesting cgroups deep does not hide from
	// an include (nothing above it is included: the default would be
	// not to trace it).
	t.Run("too deep", func(t *testing.T) {
		p := nettest.NewPair(t)
		// 65 levels below the root: the filter sees its 64 deepest, not the root.
		w := &workload{name: "deep", rel: top + strings.Repeat("/d", 64)}
		retryOnMiss(t, func(t *testing.T, attempt int) *observer {
			o, _ := udpToItself(t, tr, root, p, w, uint16(7700+10*attempt), attempt, 200, 700)
			return o
		})
		if n := tr.Stats().CgroupFilterTooDeep; n < 2 {
			t.Errorf("CgroupFilterTooDeep = %d, want the two flows' starts at least", n)
		}
	})

	// Lost mkdir/rmdir events make the drain put the filter's cgroups
	// back in the kernel's table from the file system at once, and walk
	// the hierarchy again for the names, in the background: here a
	// filtered cgroup's entry is taken out of the table, as if its mkdir
	// event had been lost, and the loss counted.
	t.Run("lost events", func(t *testing.T) {
		id := idOf(excluded)
		if !inFilter(id, cgroupExclude) {
			t.Fatalf("the excluded cgroup %s (%d) is not in the kernel's filter", excluded, id)
		}
		before, _ := tr.CgroupStats()
		tr.drainMu.Lock()
		err := tr.objs.CgroupFilter.Delete(id)
		delete(tr.cgroupFilterIDs, id)
		tr.drainMu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		var lost uint64
		if err := tr.objs.LostCgroupEvents.Get(&lost); err != nil {
			t.Fatal(err)
		}
		if err := tr.objs.LostCgroupEvents.Set(lost + 1); err != nil {
			t.Fatalf("counting a lost event: %v", err)
		}
		tr.drainClosed()
		if !inFilter(id, cgroupExclude) {
			t.Errorf("the excluded cgroup %s (%d) is not back in the kernel's filter after the drain that saw the loss", excluded, id)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			after, _ := tr.CgroupStats()
			if after.Scans > before.Scans {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d walks, want more than the %d before the loss", after.Scans, before.Scans)
			}
			time.Sleep(10 * time.Millisecond)
			tr.drainClosed()
		}
	})
}

// In the DaemonSet the host's cgroup root is mounted inside the container
// (/host/sys/fs/cgroup, --tracer.cgroup-path): a bind mount of the root,
// here. Paths are named under it, the same as on the host; a cgroup made
// after start-up is named from its mkdir event.
func TestCgroupNamesThroughTheDaemonSetMount(t *testing.T) {
	nettest.RequireRoot(t)
	root := testCgroupRoot(t)
	mnt := filepath.Join(t.TempDir(), "host", "sys", "fs", "cgroup")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(root, mnt, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mounting %s at %s: %v", root, mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", mnt, err)
		}
	})
	if got := cgroupRoot(mnt); got != mnt {
		t.Fatalf("cgroupRoot(%s) = %s, want the mount itself", mnt, got)
	}
	tr := newTestTracer(t, func(c *Config) {
		c.Cgroups = true
		c.CgroupPath = mnt
		c.CollectTCPConns = false // UDP: every kernel of the matrix
	})
	p := nettest.NewPair(t)
	w := testWorkloads(fmt.Sprintf("/conntrace-test-%d", time.Now().UnixNano()))[1] // docker-shaped
	retryOnMiss(t, func(t *testing.T, attempt int) *observer {
		o, k := udpToItself(t, tr, root, p, w, uint16(7600+10*attempt), attempt, 300, 1200)
		if o.missed {
			return o
		}
		for n := range k.totals(false) {
			if tt := o.tot[n]; len(tt.cgroups) != 1 || !tt.cgroups[w.id] {
				t.Errorf("%s: cgroups %v, want only %d", n, tt.cgroups, w.id)
			}
		}
		return o
	})
	if got, ok := tr.Cgroup(w.id); !ok || got != w.want {
		t.Errorf("named %+v, %v; want %+v", got, ok, w.want)
	}
	if s, _ := tr.CgroupStats(); s.Scans != 2 || s.Misses != 0 {
		t.Errorf("%d walks and %d misses, want the two start-up walks alone (before and after attaching; named from its mkdir event) and none", s.Scans, s.Misses)
	}
}
