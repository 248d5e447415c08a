package tracer

import (
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// holdFiles has n million descriptors open on the host, besides the
// test's: sleeping children that each inherit the same descriptors of
// /dev/null, as many as the file limit lets this process open (up to
// 19,500: the limit here is 20,000 a process; a guest's root raises its
// own), opened without close-on-exec and closed in the test once the
// children are started. They go when the test ends.
func holdFiles(t *testing.T, millions int) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < 20000 { // raised where root may (CAP_SYS_RESOURCE)
		raised := syscall.Rlimit{Cur: 20000, Max: 20000}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	perChild := int(min(lim.Cur, 20000)) - 500
	fds := make([]int, 0, perChild)
	defer func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}()
	for range perChild {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0) // inherited
		if err != nil {
			t.Fatalf("opening /dev/null %d times: %v", len(fds)+1, err)
		}
		fds = append(fds, fd)
	}
	for range (millions*1_000_000 + perChild - 1) / perChild {
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting a holder of %d files: %v", perChild, err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
}

// With a million descriptors open on the host, a task_file iterator visits
// a million objects in one read() without writing anything, and the kernel
// stops that read with EAGAIN (MAX_ITER_OBJECTS): the tracer reads on. It
// failed to start (the start-up pass over every file), and on kernels
// whose live read is task_file every scrape would have failed. A
// connection open before start-up is found by the start-up pass, and its
// later bytes by the live reads.
func TestStartsAndReadsWithAMillionOpenFiles(t *testing.T) {
	nettest.RequireRoot(t)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	cc, sc := exchange(t, p, ln, 10, 10, true)
	defer cc.Close()
	defer sc.Close()
	holdFiles(t, 1)
	tr := newTestTracer(t, nil)
	if _, err := cc.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(sc, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for range 50 {
		snap, err := tr.Snapshot()
		if err != nil {
			t.Fatalf("a read with a million files open: %v", err)
		}
		seen = seen[:0]
		found := false
		for _, c := range snap.Conns {
			seen = append(seen, fmt.Sprintf("%s:%d->%s:%d sent %d", c.Source, c.SPort, c.Dest, c.DPort, c.Monotonic.SentBytes))
			found = found || (c.Dest == p.Server4 && c.DPort == port && c.Preexisting && c.Monotonic.SentBytes == 100)
		}
		snap.Release()
		if found {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("the connection to %s:%d open before start-up (100 bytes sent since) is not in 50 reads; the last had %d: %v; lost %v", p.Server4, port, len(seen), seen, tr.Stats().Lost)
}
