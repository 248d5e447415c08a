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
		if from, ok := tracerFieldsWithoutFlag[f.Name]; ok {
			if _, dup := tracerFlagNames[f.Name]; dup {
				t.Errorf("tracer.Config.%s has a flag and comes from --%s", f.Name, from)
			}
			continue
		}
		name, ok := tracerFlagNames[f.Name]
		if !ok {
			t.Errorf("tracer.Config.%s has no flag", f.Name)
			continue
		}
		if app.GetFlag(name) == nil {
			t.Errorf("flag --%s (tracer.Config.%s) is not registered", name, f.Name)
		}
	}
	if n := typ.NumField() - len(tracerFieldsWithoutFlag); len(tracerFlagNames) != n {
		t.Errorf("%d flags for %d fields that take one", len(tracerFlagNames), n)
	}
	for name := range tracerFieldsWithoutFlag {
		if _, ok := typ.FieldByName(name); !ok {
			t.Errorf("tracerFieldsWithoutFlag names %s, which tracer.Config lacks", name)
		}
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
		"--no-tracer.collect-ipv6", "--no-tracer.collect-udp", "--tracer.udp-conn-timeout=45s", "--tracer.udp-hook=kprobe", "--tracer.tcp-conn-timeout=5m", "--tracer.max-tracked-connections=1024",
		"--tracer.max-closed-connections-buffered=10", "--tracer.max-connections-state-buffered=20",
		"--tracer.client-state-expiry=30s", "--tracer.max-clients=3", "--tracer.proc-root=/host/proc",
		"--tracer.cgroup-path=/sys/fs/cgroup/x", "--tracer.ring-buffer-bytes=65536", "--tracer.bpf-debug",
		"--no-tracer.enable-conntrack", "--tracer.conntrack-max-state-size=99", "--tracer.conntrack-interval=2s",
		"--no-tracer.dns-inspection", "--tracer.collect-local-dns", "--tracer.dns-cache-size=7", "--tracer.dns-cache-bytes=8192", "--tracer.dns-cache-ttl=1m",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &tracer.Config{
		CollectTCPConns: true, CollectUDPConns: false, CollectIPv6Conns: false,
		TCPConnTimeout: 5 * time.Minute, UDPConnTimeout: 45 * time.Second, UDPHook: tracer.UDPHookKprobe,
		MaxTrackedConnections: 1024, MaxClosedConnectionsBuffered: 10, MaxConnectionsStateBuffered: 20,
		ClientStateExpiry: 30 * time.Second, MaxClients: 3, ProcRoot: "/host/proc",
		CgroupPath: "/sys/fs/cgroup/x", ClosedRingBufferBytes: 65536, BPFDebug: true,
		EnableConntrack: false, ConntrackMaxStateSize: 99, ConntrackInterval: 2 * time.Second,
		DNSInspection: false, CollectLocalDNS: true, DNSCacheSize: 7, DNSCacheBytes: 8192, DNSCacheTTL: time.Minute,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config:\n%+v\nwant:\n%+v", cfg, want)
	}
}

// TestTracerConfigErrors: Validate's messages name flags, not fields.
func TestTracerConfigErrors(t *testing.T) {
	app := kingpin.New("test", "")
	cfg := AddTracerFlags(app)
	if _, err := app.Parse([]string{"--tracer.max-clients=0", "--tracer.proc-root=", "--tracer.tcp-conn-timeout=10ms",
		"--tracer.udp-conn-timeout=0s", "--no-tracer.collect-tcp", "--no-tracer.collect-udp"}); err != nil {
		t.Fatal(err)
	}
	msgs := TracerConfigErrors(cfg)
	for _, want := range []string{
		"--tracer.max-clients=0: must be at least 1",
		"--tracer.proc-root: must not be empty",
		"--tracer.tcp-conn-timeout=10ms: must be at least 1s",
		"--tracer.udp-conn-timeout=0s: must be at least 1s",
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

// TestTracerFlagsBadValues: a value that does not parse gives an error
// that names the flag and says what it expected.
func TestTracerFlagsBadValues(t *testing.T) {
	for arg, want := range map[string]string{
		"--tracer.max-clients=ten":                 "--tracer.max-clients=ten: not an integer",
		"--tracer.max-tracked-connections=-1":      "--tracer.max-tracked-connections=-1: not an integer from 0 to 4294967295",
		"--tracer.ring-buffer-bytes=8MiB":          "--tracer.ring-buffer-bytes=8MiB: not an integer from 0 to 4294967295",
		"--tracer.udp-conn-timeout=30":             "--tracer.udp-conn-timeout=30: not a duration (such as 500ms, 30s, 2m, 1h)",
		"--tracer.client-state-expiry=soon":        "--tracer.client-state-expiry=soon: not a duration (such as 500ms, 30s, 2m, 1h)",
		"--tracer.max-connections-state-buffered=": "--tracer.max-connections-state-buffered=: not an integer",
	} {
		app := kingpin.New("test", "")
		AddTracerFlags(app)
		if _, err := app.Parse([]string{arg}); err == nil || err.Error() != want {
			t.Errorf("%s: error %v, want %q", arg, err, want)
		}
	}
}
