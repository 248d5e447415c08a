package tracer

import (
	"encoding/binary"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// A port's drops never go down while it has a listening socket: one of two
// SO_REUSEPORT sockets closing keeps its drops in the sum; the port gone,
// it starts again.
func TestListenDropsMonotonic(t *testing.T) {
	var d listenDrops
	k := listenerKey{netns: 1, port: 80}
	read := func(socks map[uint32]uint64) uint64 {
		found := map[listenerKey]*ListenerStats{}
		if socks != nil {
			found[k] = &ListenerStats{sockDrops: socks}
		}
		d.update(found)
		if socks == nil {
			return 0
		}
		return found[k].Drops
	}
	for i, step := range []struct {
		socks map[uint32]uint64
		want  uint64
	}{
		{map[uint32]uint64{10: 15, 11: 23}, 38},
		{map[uint32]uint64{10: 16}, 39}, // 11 closed: its 23 kept
		{map[uint32]uint64{10: 16, 12: 2}, 41},
		{nil, 0},                      // no listener left: forgotten
		{map[uint32]uint64{13: 1}, 1}, // a new one starts again
	} {
		if got := read(step.socks); got != step.want {
			t.Errorf("step %d: drops %d, want %d", i, got, step.want)
		}
	}
}

// parseListenDiag reads a listening socket's port (network order), accept
// queue, limit, inode and the drops of its INET_DIAG_SKMEMINFO.
func TestParseListenDiag(t *testing.T) {
	msg := make([]byte, sizeofInetDiagMsg)
	msg[0], msg[1] = unix.AF_INET, unix.BPF_TCP_LISTEN
	binary.BigEndian.PutUint16(msg[4:], 8080)
	binary.NativeEndian.PutUint32(msg[56:], 2)
	binary.NativeEndian.PutUint32(msg[60:], 4096)
	binary.NativeEndian.PutUint32(msg[68:], 777)
	mem := make([]byte, 4*9)
	binary.NativeEndian.PutUint32(mem[4*skMeminfoDrops:], 6)
	msg = append(msg, nl.NewRtAttr(7 /* INET_DIAG_SKMEMINFO */, mem).Serialize()...)
	port, queue, limit, drops, inode, ok := parseListenDiag(msg)
	if !ok || port != 8080 || queue != 2 || limit != 4096 || drops != 6 || inode != 777 {
		t.Errorf("parsed port %d queue %d limit %d drops %d inode %d ok %v", port, queue, limit, drops, inode, ok)
	}
	msg[1] = unix.BPF_TCP_ESTABLISHED
	if _, _, _, _, _, ok := parseListenDiag(msg); ok {
		t.Error("an established socket taken for a listener")
	}
	if _, _, _, _, _, ok := parseListenDiag(msg[:40]); ok {
		t.Error("a short message parsed")
	}
}
