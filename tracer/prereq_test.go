package tracer

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFindCgroup2MountHybrid(t *testing.T) {
	got, err := findCgroup2Mount("testdata/mountinfo-hybrid")
	if err != nil || got != "/sys/fs/cgroup/unified" {
		t.Fatalf("got %q, %v; want /sys/fs/cgroup/unified", got, err)
	}
}

func TestFindCgroup2MountMissingSaysWhereAndHow(t *testing.T) {
	_, err := findCgroup2Mount("testdata/mountinfo-v1-only")
	if err == nil {
		t.Fatal("no error without a cgroup2 mount")
	}
	for _, want := range []string{"testdata/mountinfo-v1-only", "mount -t cgroup2", "--tracer.cgroup-path"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	for field, mod := range map[string]func(*Config){
		"TCPConnTimeout":               func(c *Config) { c.TCPConnTimeout = 0 },
		"MaxTrackedConnections":        func(c *Config) { c.MaxTrackedConnections = 0 },
		"MaxClosedConnectionsBuffered": func(c *Config) { c.MaxClosedConnectionsBuffered = -1 },
		"ClientStateExpiry":            func(c *Config) { c.ClientStateExpiry = time.Millisecond },
		"MaxClients":                   func(c *Config) { c.MaxClients = 0 },
		"TCPIterator":                  func(c *Config) { c.TCPIterator = "files" },
		"ProcRoot":                     func(c *Config) { c.ProcRoot = "" },
		"ClosedRingBufferBytes":        func(c *Config) { c.ClosedRingBufferBytes = 5000 },
		"CollectTCPConns":              func(c *Config) { c.CollectTCPConns, c.CollectUDPConns = false, false },
	} {
		cfg := NewDefaultConfig()
		mod(cfg)
		err := cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), field) {
			t.Errorf("%s out of range: error %v, want one starting with the field name", field, err)
		}
		if fe := (*FieldError)(nil); !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s out of range: error %#v, want a *FieldError of that field", field, err)
		}
	}
	if err := NewDefaultConfig().Validate(); err != nil {
		t.Errorf("default config invalid: %v", err)
	}
}

func TestDecodeRecordsRejectsTornBuffer(t *testing.T) {
	if _, err := decodeRecords(nil, make([]byte, recordSize+1)); err == nil {
		t.Fatal("a buffer that is not a whole number of records was accepted")
	}
	recs, err := decodeRecords(nil, make([]byte, 3*recordSize))
	if err != nil || len(recs) != 3 {
		t.Fatalf("3 records: got %d, %v", len(recs), err)
	}
}

func TestKnownKeepsCountersMonotonicAndCompletesReads(t *testing.T) {
	k := newKnown(100)
	now := time.Unix(1000, 0)
	key := ConnKey{Cookie: 7}
	c := ConnectionStats{Key: key, Monotonic: Counters{SentBytes: 100, RecvBytes: 50, Retransmits: 2}}
	k.beginRead()
	k.live(&c, now)
	// A racing live read comes out one byte low: reported as before.
	low := ConnectionStats{Key: key, Monotonic: Counters{SentBytes: 99, RecvBytes: 50, Retransmits: 2}}
	k.beginRead()
	if k.live(&low, now) == nil || low.Monotonic.SentBytes != 100 {
		t.Fatalf("low read reported %d, want 100", low.Monotonic.SentBytes)
	}
	// Not visited by the next read: its last values complete the read.
	k.beginRead()
	conns, expired := k.endRead(nil, now.Add(time.Second), time.Minute)
	if len(conns) != 1 || conns[0].Monotonic.SentBytes != 100 || k.m[key].expired || len(expired) != 0 {
		t.Fatalf("unvisited connection: got %v, expired %v (%v)", conns, k.m[key].expired, expired)
	}
	// Past the timeout it is no longer reported, marked expired, and
	// returned with its last values: it leaves, as if closed.
	k.beginRead()
	conns, expired = k.endRead(nil, now.Add(2*time.Minute), time.Minute)
	if len(conns) != 0 || len(k.m) != 1 || !k.m[key].expired {
		t.Fatalf("after timeout: got %v, entry %+v", conns, k.m[key])
	}
	if len(expired) != 1 || expired[0].Monotonic.SentBytes != 100 || expired[0].Closed {
		t.Fatalf("after timeout: expired %v, want the connection with its last values, not closed", expired)
	}
	// A closed connection never comes back from a stale live read: one
	// whose iterator ran before the close.
	k.startRead()
	k.closed(&ConnectionStats{Key: key, Monotonic: Counters{SentBytes: 120}}, now)
	k.beginRead()
	if k.live(&ConnectionStats{Key: key, Monotonic: Counters{SentBytes: 110}}, now) != nil {
		t.Fatal("stale live read of a closed connection accepted")
	}
	// That read over, the entry goes: no later read can see the socket
	// (the iterator skips closed ones).
	k.endRead(nil, now, time.Minute)
	if _, ok := k.m[key]; ok {
		t.Error("the closed connection's entry outlived the read")
	}
	// Closed with no read in flight: not kept at all.
	c2 := ConnectionStats{Key: ConnKey{Cookie: 8}, Monotonic: Counters{SentBytes: 5}}
	k.beginRead()
	k.live(&c2, now)
	k.endRead(nil, now, time.Minute)
	k.closed(&c2, now)
	if _, ok := k.m[c2.Key]; ok {
		t.Error("a connection closed between reads kept its entry")
	}
}
