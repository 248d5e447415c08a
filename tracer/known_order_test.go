package tracer

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"
	"weak"
)

// known guesses each record's entry from the last read's order (find):
// whatever the order does between reads (sockets come, close during a read
// or between reads, are not held, are visited twice, the walk reorders),
// each record must get the map's entry, as without the guess.
func TestKnownOrderGuessIsTheMapsEntry(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	k := newKnown(64)
	now := t0
	var socks []uint64 // the kernel's hash order
	nextCookie := uint64(1)
	guessed := 0
	visitedOnce := map[uint64]bool{} // a socket never visited is not known
	for round := range 400 {
		// sockets come, anywhere in the order
		for range rng.IntN(4) {
			i := rng.IntN(len(socks) + 1)
			socks = slices.Insert(socks, i, nextCookie)
			nextCookie++
		}
		// some close between reads
		for range rng.IntN(3) {
			if len(socks) > 0 {
				i := rng.IntN(len(socks))
				c := ConnectionStats{Key: ConnKey{Cookie: socks[i]}, Closed: true}
				k.closed(&c, now)
				socks = slices.Delete(socks, i, i+1)
			}
		}
		if rng.IntN(10) == 0 { // the walk reorders (a resize of the hash)
			rng.Shuffle(len(socks), func(i, j int) { socks[i], socks[j] = socks[j], socks[i] })
		}
		k.startRead()
		k.beginRead()
		var conns []*ConnectionStats
		var closedNow []uint64
		for i, cookie := range socks {
			if rng.IntN(20) == 0 {
				continue // not held by a process: not visited
			}
			if rng.IntN(30) == 0 { // closes during the read, before its record
				c := ConnectionStats{Key: ConnKey{Cookie: cookie}, Closed: true}
				k.closed(&c, now)
				closedNow = append(closedNow, cookie)
			}
			visits := 1
			if rng.IntN(25) == 0 {
				visits = 2 // a socket shared by two processes
			}
			visitedOnce[cookie] = true
			for range visits {
				key := ConnKey{Cookie: cookie}
				want := k.m[key]
				if k.cur < len(k.order) && k.order[k.cur] != nil && k.order[k.cur].stats.Key == key {
					guessed++
				}
				c := ConnectionStats{Key: key, Monotonic: Counters{SentBytes: uint64(round*1000 + i)}}
				p := k.live(&c, now)
				got := k.m[key]
				switch {
				case want != nil && want.closed:
					if p != nil {
						t.Fatalf("round %d: the closed %v was taken as live", round, key)
					}
				case want != nil && p != &want.stats:
					t.Fatalf("round %d: %v got another entry than the map's", round, key)
				case want == nil && (got == nil || p != &got.stats):
					t.Fatalf("round %d: the new %v is not the map's entry", round, key)
				}
				if p != nil {
					conns = append(conns, p)
				}
			}
		}
		live, _ := k.endRead(conns, now, time.Hour)
		seen := map[ConnKey]bool{}
		for _, c := range live {
			seen[c.Key] = true
		}
		for _, cookie := range socks {
			if visitedOnce[cookie] && !seen[ConnKey{Cookie: cookie}] && !slices.Contains(closedNow, cookie) {
				t.Fatalf("round %d: %d is not reported", round, cookie)
			}
		}
		for _, cookie := range closedNow {
			socks = slices.DeleteFunc(socks, func(c uint64) bool { return c == cookie })
		}
		n := 0
		for _, cookie := range socks {
			if visitedOnce[cookie] {
				n++
			}
		}
		if len(k.m) != n {
			t.Fatalf("round %d: %d entries for %d sockets", round, len(k.m), n)
		}
		now = now.Add(time.Second)
	}
	if guessed < 1000 {
		t.Errorf("only %d records found by the order guess: it is not exercised", guessed)
	}
}

// A closed connection's entry is unreachable once known drops it, whether
// it closed between reads or during one: the visit orders that find
// guesses from keep no closed connection's memory, scraped or not.
func TestKnownKeepsNoClosedConnection(t *testing.T) {
	k := newKnown(10)
	now := t0
	read := func(cookies ...uint64) {
		k.startRead()
		k.beginRead()
		for _, cookie := range cookies {
			k.live(&ConnectionStats{Key: ConnKey{Cookie: cookie}}, now)
		}
		k.endRead(nil, now, time.Hour)
	}
	read(1, 2, 3)
	read(1, 2, 3)
	var gone []weak.Pointer[knownConn]
	for cookie := uint64(1); cookie <= 2; cookie++ { // 1 and 2 close between reads
		gone = append(gone, weak.Make(k.m[ConnKey{Cookie: cookie}]))
		k.closed(&ConnectionStats{Key: ConnKey{Cookie: cookie}, Closed: true}, now)
	}
	runtime.GC()
	for i, w := range gone {
		if w.Value() != nil {
			t.Errorf("connection %d, closed between reads, is still reachable", i+1)
		}
	}

	gone = gone[:0]
	k.startRead() // 3 closes during a read
	k.beginRead()
	gone = append(gone, weak.Make(k.m[ConnKey{Cookie: 3}]))
	k.closed(&ConnectionStats{Key: ConnKey{Cookie: 3}, Closed: true}, now)
	k.endRead(nil, now, time.Hour)
	runtime.GC()
	if gone[0].Value() != nil {
		t.Error("connection 3, closed during a read, is still reachable")
	}
	if len(k.m) != 0 {
		t.Errorf("%d entries left", len(k.m))
	}
}

// known holds one entry per tracked connection, 200,000 at the scale of
// BENCHMARKS.md §13: a field that pushed knownConn past 352 bytes would
// cost the next size class (384), 6.4 MB more there.
func TestKnownConnSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(knownConn{}); n > 352 {
		t.Errorf("knownConn is %d bytes, more than its 352-byte size class", n)
	}
}
