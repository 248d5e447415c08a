package tracer

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

// A DNAT rule in the client's namespace: the client connects to a virtual
// address, the kernel sends it to the real server. The client's end reports
// the translation (the real peer), and bytes stay exact.
func TestDNATTranslationReported(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) { c.ConntrackInterval = 100 * time.Millisecond })
	p := nettest.NewPair(t)
	ln := listenPort(t, p, 8080)
	rules := `table ip conntrace_nat {
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr 198.18.0.100 tcp dport 80 dnat to 198.18.0.2:8080
	}
}`
	cmd := exec.Command("ip", "netns", "exec", p.ClientName, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	vip := netip.MustParseAddr("198.18.0.100")
	o := newObserver(t, tr, t.Name(), map[string]end{
		"client": {src: p.Client4, dst: vip, port: 80},
		"server": {src: p.Server4, dst: p.Client4, port: 8080, incoming: true},
	})
	done := make(chan net.Conn, 1)
	go func() {
		sc, err := ln.Accept()
		if err != nil {
			done <- nil
			return
		}
		io.CopyN(io.Discard, sc, 3333)
		sc.Write(bytes.Repeat([]byte{'s'}, 44))
		done <- sc
	}()
	cc, err := p.Dial("tcp", "198.18.0.100:80")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Write(make([]byte, 3333))
	io.ReadFull(cc, make([]byte, 44))
	sc := <-done
	if sc == nil {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	o.waitFor("both ends", func(tot map[string]*kTotals) bool {
		return tot["client"].sent == 3333 && tot["server"].recv == 3333 && tot["client"].recv == 44
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		conns := connsTo(t, tr, func(c *ConnectionStats) bool { return c.Dest == vip || c.SPort == 8080 })
		var client, server *ConnectionStats
		for i := range conns {
			if conns[i].Dest == vip {
				client = &conns[i]
			} else if conns[i].Dest == p.Client4 {
				server = &conns[i]
			}
		}
		if client != nil && client.IPTranslation != nil {
			want := IPTranslation{ReplSrcIP: p.Server4, ReplSrcPort: 8080, ReplDstIP: p.Client4, ReplDstPort: client.SPort}
			if *client.IPTranslation != want || client.NATRemote() != p.Server4 {
				t.Errorf("client translation %+v (NAT remote %s), want %+v", *client.IPTranslation, client.NATRemote(), want)
			}
			if server == nil || server.IPTranslation != nil {
				t.Errorf("server end %v: want it found, without translation", server)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no translation for the client end: %v", conns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkTotals(t, o, "client", 3333, 44)
	checkTotals(t, o, "server", 44, 3333)
	if st := tr.Stats(); st.Lost[LostConntrackError] != 0 {
		t.Errorf("conntrack errors: %d", st.Lost[LostConntrackError])
	}
}
