package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
	"github.com/conntrace/conntrace_exporter/internal/testenv"
	"github.com/conntrace/conntrace_exporter/tracer"
)

// The scenario, on real traffic: one UDP socket talks to 500 peers;
// the exporter runs with --collector.max-series=50 and two address groups.
// The series stay within the cap (plus the overflow series) and, for every
// metric, the sum over all series equals the traffic the test sent.
func TestCardinalityBoundedAndConserved(t *testing.T) {
	nettest.RequireRoot(t)
	bin := testenv.BuildExporter(t)
	pair := nettest.NewPair(t)
	var peers []netip.Addr
	for i := 0; i < 500; i++ {
		peers = append(peers, netip.AddrFrom4([4]byte{198, 18, byte(1 + i/250), byte(1 + i%250)}))
	}
	if err := pair.AddServerAddrs(peers); err != nil {
		t.Fatal(err)
	}
	// One server socket per peer address, so that each answers from the
	// address it was asked on (a socket bound to 0.0.0.0 would answer from
	// the primary address: the client would then see a 501st peer).
	const port = 7000
	for _, peer := range peers {
		var srv net.PacketConn
		if err := nettest.Do(pair.Server, func() (err error) {
			srv, err = net.ListenPacket("udp4", netip.AddrPortFrom(peer, port).String())
			return
		}); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		go func() { // answer twice the size
			buf := make([]byte, 2048)
			for {
				n, from, err := srv.ReadFrom(buf)
				if err != nil {
					return
				}
				srv.WriteTo(make([]byte, 2*n), from)
			}
		}()
	}

	// Only the test's traffic is traced, so sums over all series are exact.
	cfg := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfg, []byte(`included_source_connections:
  "198.18.0.0/15": ["*"]
included_destination_connections:
  "198.18.0.0/15": ["*"]
address_groups: ["198.18.1.0/25", "198.18.2.0/24"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	debugAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	exp := exec.Command(bin, "--web.listen-address="+addr, "--config.file="+cfg, "--collector.max-series=50",
		"--debug.listen-address="+debugAddr, "--tracer.bpf-stats")
	log := &lineLogger{t: t, prefix: "exporter: "}
	exp.Stderr = log
	p := start(t, exp)
	p.stderr = log
	url := "http://" + addr + "/metrics?client_id=cardinality"
	waitHTTP(t, p, url, 20*time.Second) // first scrape: the client starts at zero

	var cl net.PacketConn
	if err := nettest.Do(pair.Client, func() (err error) {
		cl, err = net.ListenPacket("udp4", pair.Client4.String()+":0")
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var sent uint64
	buf := make([]byte, 4096)
	for i, peer := range peers {
		n := 1 + i%700
		if _, err := cl.WriteTo(make([]byte, n), net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer, port))); err != nil {
			t.Fatal(err)
		}
		cl.SetReadDeadline(time.Now().Add(2 * time.Second))
		if m, from, err := cl.ReadFrom(buf); err != nil || m != 2*n || from.(*net.UDPAddr).AddrPort() != netip.AddrPortFrom(peer, port) {
			t.Fatalf("answer from %s: %d bytes from %v, %v", peer, m, from, err)
		}
		sent += uint64(n)
	}
	// Client: sent, received 2×sent; server: the mirror image.
	want := map[string]float64{
		"conntrace_sent_bytes_total":         float64(3 * sent),
		"conntrace_received_bytes_total":     float64(3 * sent),
		"conntrace_connections_opened_total": 1000, // a flow per peer, on each side
		"conntrace_connections":              1000,
	}
	var last map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs := scrape(t, url)
		last = map[string]float64{}
		ok := true
		for name, w := range want {
			got, n := sumOf(mfs, name, nil)
			last[name] = got
			if n > 51 {
				t.Fatalf("%s has %d series, more than the cap of 50 plus the overflow series", name, n)
			}
			ok = ok && got == w
		}
		if ok {
			overflow, _ := sumOf(mfs, "conntrace_sent_bytes_total", map[string]string{"remote_addr": "overflow"})
			grouped, _ := sumOf(mfs, "conntrace_sent_bytes_total", map[string]string{"remote_addr": "198.18.2.0/24"})
			_, n := sumOf(mfs, "conntrace_sent_bytes_total", nil)
			t.Logf("series per metric: %d; bytes in the overflow series: %.0f; in group 198.18.2.0/24: %.0f", n, overflow, grouped)
			if overflow == 0 {
				t.Error("nothing reached the overflow series: the cap was not exercised")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sums over all series %v, want %v", last, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The debug endpoints, enabled here: the raw connections, readable.
	maps, err := get("http://" + debugAddr + "/debug/net_maps")
	if err != nil || bytes.Count(maps, []byte("|dst:198.18.")) < 500 || !bytes.Contains(maps, []byte("[UDP]")) {
		t.Errorf("debug net_maps: %v, %d flows to 198.18.x", err, bytes.Count(maps, []byte("|dst:198.18.")))
	}
	for _, u := range []string{"/debug/pprof/", "/debug/vars", "/debug/stats", "/debug/net_state?client_id=cardinality"} {
		if _, err := get("http://" + debugAddr + u); err != nil {
			t.Errorf("debug %s: %v", u, err)
		}
	}
	// Program health with --tracer.bpf-stats.
	mfs := scrape(t, url)
	sendProg := "kretprobe_udp_sendmsg" // the hook auto picks: the tracepoint, else fexit, else the kprobes
	if tracer.UDPHookPossible(tracer.UDPHookTracepoint) == nil {
		sendProg = "handle_send_length"
	} else if tracer.UDPHookPossible(tracer.UDPHookFentry) == nil {
		sendProg = "fexit_udp_sendmsg"
	}
	if runs, n := sumOf(mfs, "conntrace_bpf_program_runs_total", map[string]string{"program": sendProg}); n != 1 || runs < 500 {
		t.Errorf("%s runs %v (%d series), want at least the 500 sends", sendProg, runs, n)
	}
	// The UDP programs and dns_ingress, and the TCP ones where TCP is traced.
	wantProgs := 7
	if tracer.TCPPossible() == nil {
		wantProgs = 10
	}
	if _, n := sumOf(mfs, "conntrace_bpf_program_info", nil); n < wantProgs {
		t.Errorf("%d programs in conntrace_bpf_program_info, want at least %d", n, wantProgs)
	}

	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
