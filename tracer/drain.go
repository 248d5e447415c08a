package tracer

import (
	"errors"
	"os"
	"time"

	"github.com/go-kit/log/level"

	"github.com/conntrace/conntrace_exporter/bpf"
)

// Sink receives the connections that leave the tracer: closed ones (Closed
// set, their final counters) and those it stops reporting without a close
// (their close record was lost, or a UDP flow went idle before the kernel
// said so: their last counters; a later record of one counts only what is
// new). netstate.State is the real one.
type Sink interface {
	Closed(conns []ConnectionStats)
	// Clients says how many clients the sink counts for: with none, what
	// leaves is dropped at once (a new client gets what leaves after it).
	Clients() int
}

type sinkBox struct{ Sink }

// SetSink sets where the connections that leave go. Until one is set they
// are counted nowhere (nobody scrapes yet: a client only gets what leaves
// after its first scrape).
func (t *Tracer) SetSink(s Sink) { t.sink.Store(&sinkBox{s}) }

// emit gives conns to the sink.
func (t *Tracer) emit(conns []ConnectionStats) {
	if len(conns) == 0 {
		return
	}
	if b := t.sink.Load(); b != nil {
		b.Closed(conns)
	}
}

// wanted says whether a sink counts what leaves.
func (t *Tracer) wanted() bool {
	b := t.sink.Load()
	return b != nil && b.Clients() > 0
}

// drainInterval is how often closed connections are moved from the ring
// buffer to the sink while they come. The kernel side never wakes user
// space up (a wakeup costs as much as the rest of the program), so this
// bounds the ring's fill: 8 MiB hold 24,966 records (BENCHMARKS.md §11, §16).
// When a drain finds the rings empty, the next one waits twice as long, up
// to drainIdleInterval: on this VM a wakeup every 100 ms cost 1.8 ms of CPU
// a second even with nothing to do (BENCHMARKS.md §12).
const (
	drainInterval = 100 * time.Millisecond
	// 400 ms: the default ring holds a burst of 62,000 closes a second
	// from idle (50,000 promised; 500 ms held 49,900 once the record grew
	// to 328 bytes, issue 16).
	drainIdleInterval = 400 * time.Millisecond
)

// nextDrain is the wait after a drain that waited wait and found records
// (busy) or none.
func nextDrain(wait time.Duration, busy bool) time.Duration {
	if busy {
		return drainInterval
	}
	return min(2*wait, drainIdleInterval)
}

// drainLoop drains the ring buffers until Close: every drainInterval
// while records come, less often while none do. It never waits for a
// read or a dump: it takes only drainMu, kmu (held by a read only while it
// clamps records) and, if free, ctMu.
func (t *Tracer) drainLoop() {
	defer t.loops.Done()
	wait := drainInterval
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-timer.C:
			busy := t.closedRd.AvailableBytes() > 0 || (t.dnsRd != nil && t.dnsRd.AvailableBytes() > 0) ||
				(t.cgroupRd != nil && t.cgroupRd.AvailableBytes() > 0)
			if busy {
				t.drainClosed()
			}
			wait = nextDrain(wait, busy)
			timer.Reset(wait)
		}
	}
}

// natCheckEvery is how often the sweep looks whether the closed
// connections waiting for their NAT are due (see flushNAT). A dump walks
// the whole conntrack table (BENCHMARKS.md: at 6,000 closes a second,
// dumps every second were 40 % of the exporter's CPU).
const natCheckEvery = time.Second

// sweepLoop, until Close, closes idle UDP flows, expires the DNS cache, and
// gives the closed connections waiting for their NAT after a dump, even
// when nobody scrapes: memory stays bounded without scrapes.
func (t *Tracer) sweepLoop() {
	defer t.loops.Done()
	sweep := time.NewTicker(udpSweepEvery(t.cfg.UDPConnTimeout))
	defer sweep.Stop()
	nat := time.NewTicker(natCheckEvery)
	defer nat.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-nat.C:
			if !t.wanted() {
				t.natMu.Lock()
				t.natWait, t.natFree = recordQueue{}, chunkPool{} // nobody to give them to
				t.natMu.Unlock()
				continue
			}
			t.mu.Lock()
			t.flushNAT(time.Now())
			t.mu.Unlock()
		case <-sweep.C:
			now := time.Now()
			t.mu.Lock()
			if _, err := t.readUDP(nil, ktimeNow(), false); err != nil {
				level.Warn(t.logger).Log("msg", "sweeping idle UDP flows", "err", err)
			}
			t.mu.Unlock()
			if t.dns != nil {
				t.dns.Expire(now)
			}
		}
	}
}

// drainBatch bounds the closed connections given to the sink at once.
const drainBatch = 1024

// drainClosed moves every closed connection in the ring buffer to the
// sink, its NAT set when known (else it waits in natWait for the next
// dump).
func (t *Tracer) drainClosed() {
	t.drainMu.Lock()
	defer t.drainMu.Unlock()
	t.drainDNS()
	t.drainCgroups() // before the connections: a new cgroup's are named
	// A deadline in the past: read what is there, never wait.
	t.closedRd.SetDeadline(time.Unix(1, 0))
	now := time.Now()
	batch, raws := t.drainBuf[:0], t.drainRaw[:0]
	defer func() { t.drainBuf, t.drainRaw = batch[:0], raws[:0] }()
	for {
		err := t.closedRd.ReadInto(&t.drainRec)
		if err == nil {
			batch, raws = t.takeRecord(batch, raws, t.drainRec.RawSample)
			if len(batch) < drainBatch {
				continue
			}
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			level.Warn(t.logger).Log("msg", "reading the closed-connection ring buffer", "err", err)
		}
		t.settle(batch, raws, now)
		if err != nil {
			return
		}
		batch, raws = batch[:0], raws[:0]
	}
}

// takeRecord decodes one closed-connection record and appends it to batch,
// and the record to raws, if it is traced. Callers hold drainMu.
func (t *Tracer) takeRecord(batch []ConnectionStats, raws []bpf.ConntraceConnRecord, raw []byte) ([]ConnectionStats, []bpf.ConntraceConnRecord) {
	recs, err := decodeRecords(t.drainOne[:], raw)
	if err != nil || len(recs) != 1 {
		t.decode.Add(1)
		level.Warn(t.logger).Log("msg", "undecodable closed-connection record", "bytes", len(raw), "err", err)
		return batch, raws
	}
	if c := toConnectionStats(&recs[0], t.drainComms); t.keep(&c) {
		if c.Errno != 0 {
			t.errnos.add(uint16(c.Errno))
		}
		batch, raws = append(batch, c), append(raws, recs[0])
	}
	return batch, raws
}

// settle marks a batch of closed connections closed in known (which clamps
// their counters: copied back into their records) and gives them to the
// sink, with their NAT where known (see withNAT).
func (t *Tracer) settle(batch []ConnectionStats, raws []bpf.ConntraceConnRecord, now time.Time) {
	if len(batch) == 0 {
		return
	}
	t.kmu.Lock()
	for i := range batch {
		live := t.known.closed(&batch[i], now)
		recordCounters(&raws[i], &batch[i])
		if live {
			raws[i].Flags |= connWasLive
		}
	}
	t.kmu.Unlock()
	if t.wanted() {
		t.emit(t.withNAT(batch, raws))
	}
}

// recordCounters writes c's counters back into its record r: what known
// changed (clamped, or rebased: counters, RTT, preexisting).
func recordCounters(r *bpf.ConntraceConnRecord, c *ConnectionStats) {
	setRecordCounters(r, &c.Monotonic)
	if c.Preexisting {
		r.Flags |= connPreexisting
	}
}
