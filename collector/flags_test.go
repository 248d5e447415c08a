package collector

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/conntrace/conntrace_exporter/tracer"
)

// TestTracerFlagsCoverConfig: every tracer.Config field has a flag, so a
// field added to the tracer fails here until it gets one.
func TestTracerFlagsCoverConfig(t *testing.T) {
	app := kingpin.New("test", "")
	AddTracerFlags(app)
	typ := reflect.TypeFor[tracer.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, ok := tracerFlagNames[f.Name]
		if !ok {
			t.Errorf("tracer.Config.%s has no flag", f.Name)
			continue
		}
		if app.GetFlag(name) == nil {
			t.Errorf("flag --%s (tracer.Config.%s) is not registered", name, f.Name)
		}
	}
	if len(tracerFlagNames) != typ.NumField() {
		t.Errorf("%d flags for %d fields", len(tracerFlagNames), typ.NumField())
	}
}

func TestTracerFlagsDefaults(t *testing.T) {
	app := kingpin.New("test", "")
	cfg := AddTracerFlags(app)
	if _, err := app.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, tracer.NewDefaultConfig()) {
		t.Errorf("config from default flags:\n%+v\nwant the defaults:\n%+v", cfg, tracer.NewDefaultConfig())
	}
	if msgs := TracerConfigErrors(cfg); msgs != nil {
		t.Errorf("defaults are invalid: %v", msgs)
	}
}

func TestTracerFlagsParse(t *testing.T) {
	app := kingpin.New("test", "")
	cfg := AddTracerFlags(app)
	_, err := app.Parse([]string{
		"--no-tracer.collect-ipv6", "--tracer.tcp-conn-timeout=5m", "--tracer.max-tracked-connections=1024",
		"--tracer.max-closed-connections-buffered=10", "--tracer.max-connections-state-buffered=20",
		"--tracer.client-state-expiry=30s", "--tracer.max-clients=3", "--tracer.proc-root=/host/proc",
		"--tracer.cgroup-path=/sys/fs/cgroup/x", "--tracer.ring-buffer-bytes=65536", "--tracer.bpf-debug",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &tracer.Config{
		CollectTCPConns: true, CollectIPv6Conns: false, TCPConnTimeout: 5 * time.Minute,
		MaxTrackedConnections: 1024, MaxClosedConnectionsBuffered: 10, MaxConnectionsStateBuffered: 20,
		ClientStateExpiry: 30 * time.Second, MaxClients: 3, ProcRoot: "/host/proc",
		CgroupPath: "/sys/fs/cgroup/x", ClosedRingBufferBytes: 65536, BPFDebug: true,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config:\n%+v\nwant:\n%+v", cfg, want)
	}
}

// TestTracerConfigErrors: Validate's messages name flags, not fields.
func TestTracerConfigErrors(t *testing.T) {
	app := kingpin.New("test", "")
	cfg := AddTracerFlags(app)
	if _, err := app.Parse([]string{"--tracer.max-clients=0", "--tracer.proc-root=", "--tracer.tcp-conn-timeout=10ms", "--no-tracer.collect-tcp"}); err != nil {
		t.Fatal(err)
	}
	msgs := TracerConfigErrors(cfg)
	for _, want := range []string{
		"--tracer.max-clients=0: must be at least 1",
		"--tracer.proc-root: must not be empty",
		"--tracer.tcp-conn-timeout=10ms: must be at least 1s",
	} {
		if !slices.Contains(msgs, want) {
			t.Errorf("messages %q lack %q", msgs, want)
		}
	}
	for _, m := range msgs {
		if !strings.HasPrefix(m, "--tracer.") {
			t.Errorf("message %q does not start with a flag name", m)
		}
	}
	if got := fieldToFlag("SomethingElse 3: bad"); got != "SomethingElse 3: bad" {
		t.Errorf("unknown field rewritten: %q", got)
	}
}
