package tracer

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"testing"
)

// synHash is bpf/conntrace.c's syn_hash (IPv4: jhash_3words of the
// addresses and ports; IPv6: jhash2 of the ten words; keyed with the
// seed), in Go: TestHandshakeAndDuration checks that the kernel's slot is
// this one's, TestSYNSlotsSpread what the hash does.
func synHash(seed uint32, local, remote netip.Addr, lport, rport uint16) uint32 {
	var k [40]byte
	family := uint8(afInet6)
	if local.Is4() {
		family = afInet
		l, r := local.As4(), remote.As4()
		copy(k[0:4], l[:])
		copy(k[16:20], r[:])
	} else {
		l, r := local.As16(), remote.As16()
		copy(k[0:16], l[:])
		copy(k[16:32], r[:])
	}
	binary.NativeEndian.PutUint16(k[32:], lport)
	binary.NativeEndian.PutUint16(k[34:], rport)
	k[36] = family
	var w [10]uint32
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(k[4*i:])
	}
	rol := bits.RotateLeft32
	final := func(a, b, c uint32) uint32 {
		c ^= b
		c -= rol(b, 14)
		a ^= c
		a -= rol(c, 11)
		b ^= a
		b -= rol(a, 25)
		c ^= b
		c -= rol(b, 16)
		a ^= c
		a -= rol(c, 4)
		b ^= a
		b -= rol(a, 14)
		c ^= b
		c -= rol(b, 24)
		return c
	}
	if family == afInet { // jhash_3words, as inet_ehashfn
		return final(w[0]+0xdeadbeef, w[4]+0xdeadbeef, w[8]+seed)
	}
	a := 0xdeadbeef + uint32(10<<2) + seed
	b, c := a, a
	mix := func() {
		a -= c
		a ^= rol(c, 4)
		c += b
		b -= a
		b ^= rol(a, 6)
		a += c
		c -= b
		c ^= rol(b, 8)
		b += a
		a -= c
		a ^= rol(c, 16)
		c += b
		b -= a
		b ^= rol(a, 19)
		a += c
		c -= b
		c ^= rol(b, 4)
		b += a
	}
	for i := 0; i < 9; i += 3 {
		a += w[i]
		b += w[i+1]
		c += w[i+2]
		mix()
	}
	a += w[9]
	return final(a, b, c)
}

// The clients of one /16 to one port (a pod network, the hosts behind a
// load balancer) must spread over the SYN table's slots: with a hash
// whose slot ignored the high bits of each word (the first SYN table's),
// they all shared one slot, and only one of their pending handshakes at
// a time could be timed.
func TestSYNSlotsSpread(t *testing.T) {
	server := netip.MustParseAddr("10.0.0.5")
	for _, seed := range []uint32{0, 1, 0x9e3779b9} {
		slots := map[uint32]bool{}
		n := 0
		for host := range 256 {
			for port := 32768; port < 32768+256; port++ {
				client := netip.AddrFrom4([4]byte{10, 244, byte(host), 7})
				slots[synHash(seed, server, client, 443, uint16(port))&0xffff] = true
				n++
			}
		}
		// 65,536 keys into 65,536 slots at random fill 1 − 1/e of them.
		if len(slots) < 39000 {
			t.Errorf("seed %#x: %d keys of one /16 took %d slots, want about 41,400 (random)", seed, n, len(slots))
		}
		slots6 := map[uint32]bool{}
		server6 := netip.MustParseAddr("2001:db8::5")
		for host := range 256 {
			for port := 32768; port < 32768+256; port++ {
				client := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(host)})
				slots6[synHash(seed, server6, client, 443, uint16(port))&0xffff] = true
			}
		}
		if len(slots6) < 39000 {
			t.Errorf("seed %#x: 65,536 IPv6 keys took %d slots, want about 41,400 (random)", seed, len(slots6))
		}
	}
}
