package tracer

import (
	"io"
	"testing"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// A connection established before the tracer started but not yet accepted
// (waiting in its listener's queue: no process holds it, so no file points
// to it) is found at start-up like any other, and exact from then on: it
// gets no later state change that could make the tracer notice it (issue
// 11.10: with the task_file iterator it was never traced).
func TestAcceptQueueConnectionAtStartUp(t *testing.T) {
	nettest.RequireRoot(t)
	p := nettest.NewPair(t)
	ln, port := listen(t, p, false)
	cc, err := p.Dial("tcp", ln.Addr().String()) // in the accept queue
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.Write(make([]byte, 100)); err != nil { // before the tracer
		t.Fatal(err)
	}
	tr := newTestTracer(t, nil)
	// iter/tcp reads the waiting end live; task_file, which finds sockets
	// through files, only once it is accepted.
	o := newObserver(t, tr, t.Name(), pairEnds(p, false, port))
	if o.tot["client"].preexisting != 1 {
		t.Fatalf("pre-existing connection not found at start-up: %s", o.dump())
	}
	if _, err := cc.Write(make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := io.CopyN(io.Discard, sc, 2100); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Write(make([]byte, 55)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(cc, make([]byte, 55)); err != nil {
		t.Fatal(err)
	}
	cc.Close()
	io.Copy(io.Discard, sc)
	sc.Close()
	o.waitFor("close records", func(tot map[string]*kTotals) bool {
		return tot["client"].closedSeen == 1 && tot["server"].closedSeen == 1
	})
	checkTotals(t, o, "client", 2000, 55)
	checkTotals(t, o, "server", 55, 2000)
	if tt := o.tot["server"]; tt.opened != 0 || tt.closed != 1 {
		t.Errorf("server end: opened=%d closed=%d, want 0 1 (established before the tracer)", tt.opened, tt.closed)
	}
}
