package tracer

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// dnatRules send the client's connections to 198.18.0.100:80 to the server,
// 198.18.0.2:8080: a virtual address, as a Kubernetes ClusterIP.
const dnatRules = `table ip conntrace_nat {
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr 198.18.0.100 tcp dport 80 dnat to 198.18.0.2:8080
	}
}`

// nft loads rules in the named network namespace (it goes with it).
func nft(t testing.TB, netns, rules string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", netns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

// A connection through a DNAT that opens and closes between two scrapes
// (the common case: a request to a ClusterIP) is reported with its real
// peer: the conntrack entry outlives the socket (TIME_WAIT), so the close
// record waits for the next dump (issue 11.6: reported with the virtual
// address, since no dump had seen it). The interval is the default's: the
// next scrape dumps for the records that wait, whatever the interval.
func TestDNATShortLivedConnection(t *testing.T) {
	tr := newTestTracer(t, nil)
	p := nettest.NewPair(t)
	ln := listenPort(t, p, 8080)
	nft(t, p.ClientName, dnatRules)
	vip := netip.MustParseAddr("198.18.0.100")
	if _, err := tr.GetActiveConnections(t.Name()); err != nil { // the client's first call, and a dump
		t.Fatal(err)
	}
	const conns = 3
	for range conns {
		exchangeTo(t, p, ln, "198.18.0.100:80", 100, 10, false)
	}
	var closed []viewConn
	deadline := time.Now().Add(5 * time.Second)
	for len(closed) < conns && time.Now().Before(deadline) {
		got, err := tr.GetActiveConnections(t.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range got.Conns {
			if c.Closed && c.Dest == vip {
				closed = append(closed, c)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(closed) != conns {
		t.Fatalf("%d closed connections to %s reported in 5s, want %d", len(closed), vip, conns)
	}
	for _, c := range closed {
		if c.NATRemote() != p.Server4 || c.Last.SentBytes != 100 {
			t.Errorf("closed connection %s: NAT remote %s, sent %d; want %s, 100", c.Key, c.NATRemote(), c.Last.SentBytes, p.Server4)
		}
	}
}

// A DNAT rule in the client's namespace: the client connects to a virtual
// address, the kernel sends it to the real server. The client's end reports
// the translation (the real peer), and bytes stay exact.
func TestDNATTranslationReported(t *testing.T) {
	tr := newTestTracer(t, func(c *Config) { c.ConntrackInterval = 100 * time.Millisecond })
	p := nettest.NewPair(t)
	ln := listenPort(t, p, 8080)
	rules := dnatRules
	nft(t, p.ClientName, rules)
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

// A dump asks the kernel for the NATed entries only (a status filter,
// Linux 5.15): the connections that were not NATed, most of a host's
// table, are neither sent nor parsed. Older kernels ignore the filter and
// send the whole table: the translations must be the same there, and the
// tracer must have noticed (one unfiltered dump from then on).
func TestConntrackDumpReceivesOnlyNAT(t *testing.T) {
	nettest.RequireRoot(t)
	p := nettest.NewPair(t)
	ln := listenPort(t, p, 8080)
	nft(t, p.ClientName, dnatRules)
	const natted, direct = 3, 5
	for range natted {
		exchangeTo(t, p, ln, "198.18.0.100:80", 10, 10, false)
	}
	for range direct {
		exchangeTo(t, p, ln, "198.18.0.2:8080", 10, 10, false)
	}
	ct, err := newConntracker(NewDefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ct.close()
	ct.statusFilter = filterUnknown // whether or not this host has IPVS
	var st unix.Stat_t
	if err := unix.Fstat(int(p.Client), &st); err != nil {
		t.Fatal(err)
	}
	ns := uint32(st.Ino)
	version, err := currentKernelVersion()
	if err != nil {
		t.Fatal(err)
	}
	filters := version >= 5<<16|15<<8
	for dump := 1; dump <= 2; dump++ {
		before := ct.parsed
		ct.dump(map[uint32]struct{}{ns: {}}, map[uint32]struct{}{ns: {}}, time.Now())
		if ct.errors != 0 {
			t.Fatalf("dump %d: %d errors", dump, ct.errors)
		}
		table := ct.tables[ns]
		if len(table) != 2*natted {
			t.Errorf("dump %d: %d translations, want %d (both directions of %d NATed connections): %v", dump, len(table), 2*natted, natted, table)
		}
		for k, tr := range table {
			if k.dst == netip.MustParseAddr("198.18.0.100") && (tr.ReplSrcIP != p.Server4 || tr.ReplSrcPort != 8080) {
				t.Errorf("dump %d: %v translated to %+v, want the server %s:8080", dump, k, tr, p.Server4)
			}
		}
		got := ct.parsed - before
		switch {
		case filters && (got != natted || ct.statusFilter != filterWorks):
			t.Errorf("dump %d on %s: %d entries received (filter %d), want only the %d NATed ones", dump, p.ClientName, got, ct.statusFilter, natted)
		case !filters && (got < natted+direct || ct.statusFilter != filterWhole):
			t.Errorf("dump %d, a kernel before 5.15: %d entries received (filter %d), want the whole table (at least %d) and the filter known to be ignored", dump, got, ct.statusFilter, natted+direct)
		}
	}
}

// Every closed connection is looked up in the NAT tables; most are not
// there, and such a lookup allocates nothing (it allocated two
// translations, one per table looked at: a third of the exporter's CPU
// per short connection, with the garbage collection it caused).
func TestConntrackLookupMissAllocatesNothing(t *testing.T) {
	ct := &conntracker{selfNS: 1, tables: map[uint32]map[ctKey]IPTranslation{
		1: {{proto: unix.IPPROTO_TCP, src: netip.MustParseAddr("10.0.0.1"), dst: netip.MustParseAddr("10.0.0.2"), sport: 1, dpt: 2}: {}},
		2: {},
	}}
	c := ConnectionStats{NetNS: 2, Source: netip.MustParseAddr("10.0.0.3"), Dest: netip.MustParseAddr("10.0.0.4"), SPort: 3, DPort: 4}
	if allocs := testing.AllocsPerRun(100, func() {
		if _, found := ct.find(&c); found {
			t.Fatal("found")
		}
	}); allocs != 0 {
		t.Errorf("a lookup that finds nothing allocates %.0f times, want 0", allocs)
	}
	c.NetNS, c.Source, c.Dest, c.SPort, c.DPort = 1, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 1, 2
	if _, found := ct.find(&c); !found {
		t.Error("the table's entry not found")
	}
}

// A read's decided connections keep their translation; the decisions of
// connections gone are forgotten once they outnumber the read's, never
// those of the read or of the closed ones waiting.
func TestConntrackDecisionsPruned(t *testing.T) {
	ct := &conntracker{selfNS: 1, decided: map[ConnKey]*IPTranslation{}, interval: time.Hour, last: time.Now()}
	vip := &IPTranslation{ReplSrcIP: netip.MustParseAddr("10.0.0.9")}
	live := []*ConnectionStats{{Key: ConnKey{Cookie: 1}, NetNS: 1}, {Key: ConnKey{Cookie: 2}, NetNS: 1}}
	ct.decided[live[0].Key], ct.decided[live[1].Key] = vip, nil
	waiting := []closedRef{{key: ConnKey{Cookie: 3}, netns: 1}}
	ct.decided[waiting[0].key] = nil
	for i := range 2000 { // gone without a close the tracker saw
		ct.decided[ConnKey{Cookie: uint64(100 + i)}] = nil
	}
	if ct.translate(live, waiting, time.Now()) {
		t.Fatal("dumped with every connection decided")
	}
	if live[0].IPTranslation != vip || live[1].IPTranslation != nil {
		t.Errorf("translations %v, %v; want the decided ones", live[0].IPTranslation, live[1].IPTranslation)
	}
	if len(ct.decided) != 3 {
		t.Errorf("%d decisions kept, want the read's 2 and the waiting one", len(ct.decided))
	}
	for i := range 500 { // below the bound: kept until it is passed
		ct.decided[ConnKey{Cookie: uint64(5000 + i)}] = nil
	}
	ct.translate(live, waiting, time.Now())
	if len(ct.decided) != 503 {
		t.Errorf("%d decisions, want 503 (pruned only past twice the read's, plus 1,024)", len(ct.decided))
	}
}

// IPVS NAT (kube-proxy's IPVS mode) rewrites an entry's reply tuple without
// the NAT status bits: a dump filtered by status does not receive it, so
// with IPVS loaded the tables are read whole, and its translation found.
func TestConntrackIPVSEntriesNeedWholeDumps(t *testing.T) {
	nettest.RequireRoot(t)
	p := nettest.NewPair(t)
	c, err := conntrack.Dial(&mdnetlink.Config{NetNS: int(p.Client)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client, vip, real := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.244.1.5")
	f := conntrack.NewFlow(unix.IPPROTO_UDP, 0, client, vip, 40000, 80, 600, 0)
	f.TupleReply.IP.SourceAddress, f.TupleReply.Proto.SourcePort = real, 8080 // as IPVS leaves it
	if err := c.Create(f); err != nil {
		t.Fatalf("creating an IPVS-like entry: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(p.Client), &st); err != nil {
		t.Fatal(err)
	}
	ns := uint32(st.Ino)
	want := ctKey{proto: unix.IPPROTO_UDP, src: client, dst: vip, sport: 40000, dpt: 80}
	for _, tc := range []struct {
		filter filterSupport
		found  bool
	}{{filterWhole, true}, {filterUnknown, false}} {
		ct, err := newConntracker(NewDefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		ct.statusFilter = tc.filter
		ct.dump(map[uint32]struct{}{ns: {}}, map[uint32]struct{}{ns: {}}, time.Now())
		tr, found := ct.tables[ns][want]
		ct.close()
		if version, _ := currentKernelVersion(); version < 5<<16|15<<8 {
			tc.found = true // the filter is ignored: every entry comes
		}
		if found != tc.found || (found && (tr.ReplSrcIP != real || tr.ReplSrcPort != 8080)) {
			t.Errorf("filter %d: translation %+v found %v, want found %v (to %s:8080)", tc.filter, tr, found, tc.found, real)
		}
	}
}

// IPVS is detected by its module in sysfs.
func TestIPVSLoaded(t *testing.T) {
	dir := t.TempDir()
	if ipvsLoaded(dir) {
		t.Error("IPVS found in an empty sysfs")
	}
	if err := os.MkdirAll(filepath.Join(dir, "module", "ip_vs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !ipvsLoaded(dir) {
		t.Error("IPVS not found with module/ip_vs")
	}
}

// A dump that could not read a connection's tables (its namespace not
// found, an error, the state full) decides nothing about it: it is looked
// up again after the next dump, not marked "not NATed" for its life.
func TestConntrackIncompleteDumpDecidesNothing(t *testing.T) {
	nettest.RequireRoot(t)
	ct, err := newConntracker(NewDefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ct.close()
	ct.interval = 0
	c := &ConnectionStats{Key: ConnKey{Cookie: 7}, NetNS: 1, StartEpoch: 1} // no such namespace
	if !ct.translate([]*ConnectionStats{c}, nil, time.Now()) {
		t.Fatal("no dump for an undecided connection")
	}
	if tr, ok := ct.decided[c.Key]; ok {
		t.Errorf("decided %v by a dump that could not read its namespace", tr)
	}
}
