// Package nettest builds the network the kernel tests send real traffic over:
// two network namespaces joined by a veth pair, with IPv4 and IPv6 addresses
// from ranges reserved for testing (198.18.0.0/15, RFC 2544; fd00::/8 ULA).
// Every namespace and link it creates is removed by t.Cleanup.
package nettest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/conntrace/conntrace_exporter/internal/nsexec"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireRoot skips a kernel test without root, except in CI where it fails:
// a kernel test must never skip silently there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("kernel test needs root, and CI=true: it must run")
	}
	t.Skip("kernel test needs root (loads BPF programs, creates network namespaces); run it with sudo")
}

var seq atomic.Uint32

// Pair is two network namespaces, client and server, joined by veth.
type Pair struct {
	Client, Server         netns.NsHandle
	ClientName, ServerName string
	Client4, Server4       netip.Addr
	Client6, Server6       netip.Addr
}

// NewPair creates the namespaces and the veth link between them.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	id := fmt.Sprintf("%d-%d", os.Getpid()%100000, seq.Add(1))
	p := &Pair{
		ClientName: "ctc-" + id,
		ServerName: "cts-" + id,
		Client4:    netip.MustParseAddr("198.18.0.1"),
		Server4:    netip.MustParseAddr("198.18.0.2"),
		Client6:    netip.MustParseAddr("fd00:c7::1"),
		Server6:    netip.MustParseAddr("fd00:c7::2"),
	}
	var err error
	if p.Client, err = newNamedNS(p.ClientName); err != nil {
		t.Fatalf("creating netns %s: %v", p.ClientName, err)
	}
	t.Cleanup(func() { p.Client.Close(); netns.DeleteNamed(p.ClientName) })
	if p.Server, err = newNamedNS(p.ServerName); err != nil {
		t.Fatalf("creating netns %s: %v", p.ServerName, err)
	}
	t.Cleanup(func() { p.Server.Close(); netns.DeleteNamed(p.ServerName) })

	// Link names are at most 15 bytes; the namespaces keep them apart.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vc" + id}, PeerName: "vs" + id}
	if len(veth.Name) > 15 || len(veth.PeerName) > 15 {
		t.Fatalf("veth name %q too long", veth.Name)
	}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("creating veth %s: %v", veth.Name, err)
	}
	// Deleting a namespace deletes the veth in it; this covers a failure
	// before the move.
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(veth.Name); err == nil {
			netlink.LinkDel(l)
		}
	})
	if err := p.setupEnd(veth.Name, p.Client, p.Client4, p.Client6); err != nil {
		t.Fatal(err)
	}
	if err := p.setupEnd(veth.PeerName, p.Server, p.Server4, p.Server6); err != nil {
		t.Fatal(err)
	}
	return p
}

func newNamedNS(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		return 0, err
	}
	if err := netns.Set(orig); err != nil {
		// This thread is in the wrong namespace: never give it back.
		runtime.LockOSThread()
		return 0, fmt.Errorf("returning to the original netns: %w", err)
	}
	return ns, nil
}

func (p *Pair) setupEnd(name string, ns netns.NsHandle, a4, a6 netip.Addr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := netlink.LinkSetNsFd(l, int(ns)); err != nil {
		return fmt.Errorf("moving %s into its netns: %w", name, err)
	}
	// NETLINK_ROUTE only: with no family the library also opens XFRM
	// sockets, which fail where xfrm_user is a module not loaded (Debian's
	// cloud kernels).
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle in netns: %w", err)
	}
	defer h.Close()
	if lo, err := h.LinkByName("lo"); err == nil {
		h.LinkSetUp(lo)
	}
	l, err = h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s in its netns: %w", name, err)
	}
	for _, a := range []struct {
		addr netip.Addr
		bits int
	}{{a4, 24}, {a6, 64}} {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.addr.AsSlice(), Mask: net.CIDRMask(a.bits, a.addr.BitLen())}}
		if a.addr.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("adding %s to %s: %w", a.addr, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing up %s: %w", name, err)
	}
	return nil
}

// Do runs f on an OS thread inside ns. Sockets f creates stay in ns and can
// be used from any goroutine afterwards.
func Do(ns netns.NsHandle, f func() error) error { return nsexec.Do(ns, f) }

// WidenClientPorts gives the client namespace every ephemeral port and
// lets it reuse TIME_WAIT ones: for benchmarks that open many short
// connections. /proc/sys/net is the netns of the thread that opens it.
func (p *Pair) WidenClientPorts() error {
	return Do(p.Client, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("1024 65535"), 0); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv4/tcp_tw_reuse", []byte("1"), 0)
	})
}

// Listen opens a listener in the server namespace.
func (p *Pair) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(p.Server, func() (err error) { l, err = net.Listen(network, addr); return })
	return l, err
}

// Dial connects from the client namespace.
func (p *Pair) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(p.Client, func() (err error) { c, err = net.Dial(network, addr); return })
	return c, err
}

// NSPath is the bind-mount path of ns, for `ip netns exec` and nsenter.
func (p *Pair) NSPath(ns netns.NsHandle) string {
	if ns == p.Client {
		return "/run/netns/" + p.ClientName
	}
	return "/run/netns/" + p.ServerName
}

// TCPInfo returns the kernel's TCP_INFO of a connection.
func TCPInfo(c net.Conn) (*unix.TCPInfo, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("%T is not a *net.TCPConn", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return nil, err
	}
	return info, gerr
}

// AddServerAddrs gives the server's veth more IPv4 addresses (as /32) and
// routes them from the client, so that one test can talk to many peers.
func (p *Pair) AddServerAddrs(addrs []netip.Addr) error {
	sh, err := netlink.NewHandleAt(p.Server, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer sh.Close()
	links, err := sh.LinkList()
	if err != nil {
		return err
	}
	var veth netlink.Link
	for _, l := range links {
		if l.Type() == "veth" {
			veth = l
		}
	}
	if veth == nil {
		return fmt.Errorf("no veth in netns %s", p.ServerName)
	}
	for _, a := range addrs {
		if err := sh.AddrAdd(veth, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return fmt.Errorf("adding %s: %w", a, err)
		}
	}
	ch, err := netlink.NewHandleAt(p.Client, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer ch.Close()
	links, err = ch.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Type() != "veth" {
			continue
		}
		// Everything in 198.18.0.0/15 is on the link.
		dst := &net.IPNet{IP: net.IPv4(198, 18, 0, 0).To4(), Mask: net.CIDRMask(15, 32)}
		if err := ch.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("route to %s: %w", dst, err)
		}
	}
	return nil
}

// DropServerDataSegments makes the server namespace drop one in four TCP
// data segments (packets over 200 bytes) arriving for port, at random, with
// nftables (tc netem is not built on these kernels): the client
// retransmits. The table goes with the namespace.
func (p *Pair) DropServerDataSegments(t testing.TB, port int) {
	t.Helper()
	p.ServerNft(t, fmt.Sprintf(`table inet conntrace_test {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport %d meta length > 200 numgen random mod 4 == 0 drop
	}
}`, port))
}

// ServerNft loads nftables rules (nft -f syntax) in the server namespace;
// its tables go with the namespace.
func (p *Pair) ServerNft(t testing.TB, rules string) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft (nftables) is needed to drop or reject packets: %v", err)
	}
	cmd := exec.Command("ip", "netns", "exec", p.ServerName, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in netns %s: %v: %s", p.ServerName, err, out)
	}
}
