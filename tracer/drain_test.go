package tracer

import (
	"testing"
	"time"
)

// The drain comes every drainInterval while records come, and backs off
// to drainIdleInterval, doubling, while none do; the first record after
// an idle spell brings the interval back at once.
func TestDrainBacksOffWhenIdle(t *testing.T) {
	wait := drainInterval
	var waits []time.Duration
	for range 5 {
		wait = nextDrain(wait, false)
		waits = append(waits, wait)
	}
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("idle waits %v, want %v", waits, want)
		}
	}
	if got := nextDrain(wait, true); got != drainInterval {
		t.Errorf("after records: %v, want %v", got, drainInterval)
	}
	// From idle, the first drain comes at most drainIdleInterval after a
	// burst starts: the default ring must hold what the README promises
	// from idle, 50,000 closes a second (a record and its 8-byte header).
	records := int(NewDefaultConfig().ClosedRingBufferBytes) / (recordSize + 8)
	if perSecond := float64(records) / drainIdleInterval.Seconds(); perSecond < 50000 {
		t.Errorf("the default ring holds %d records: %.0f closes a second from idle, want at least 50,000", records, perSecond)
	}
}
