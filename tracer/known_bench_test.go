package tracer

import (
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkKnownRead is known's share of a live read at 200,000 sockets
// (scripts/bench-scale.sh's count): every record of a read is clamped and
// kept as readActive does, in an order that is the same from one read to
// the next (the iterator walks the kernel's socket hash) but not the order
// the entries were made in. ns/op is per record.
func BenchmarkKnownRead(b *testing.B) {
	const n = 200_000
	k := newKnown(262_144)
	recs := make([]ConnectionStats, n)
	for i := range recs {
		recs[i] = mkConn(uint64(i+1), 100, 200)
	}
	now := time.Unix(0, 0)
	read := func(order []ConnectionStats, conns []*ConnectionStats) []*ConnectionStats {
		k.startRead()
		k.beginRead()
		conns = conns[:0]
		for i := range order {
			c := order[i]
			c.Monotonic.SentBytes++
			if p := k.live(&c, now); p != nil {
				conns = append(conns, p)
			}
		}
		conns, _ = k.endRead(conns, now, time.Hour)
		return conns
	}
	conns := read(recs, nil) // made in this order
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	conns = read(recs, conns)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += n {
		conns = read(recs, conns)
	}
	if len(conns) != n {
		b.Fatalf("%d connections read, want %d", len(conns), n)
	}
}
