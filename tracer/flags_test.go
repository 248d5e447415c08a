package tracer

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

// TestFlagsCoverConfig: every Config field has a flag or is listed in
// fieldsWithoutFlag, so a field added to the tracer fails here until it gets
// one; every row names a field, once, and its flag is registered.
func TestFlagsCoverConfig(t *testing.T) {
	app := kingpin.New("test", "")
	AddFlags(app)
	typ := reflect.TypeFor[Config]()
	rows := map[string]int{}
	flags := map[string]int{}
	for _, r := range flagRows {
		rows[r.field]++
		flags[r.flag]++
		if _, ok := typ.FieldByName(r.field); !ok {
			t.Errorf("flag --%s names Config.%s, which does not exist", r.flag, r.field)
		}
		if !strings.HasPrefix(r.flag, "tracer.") {
			t.Errorf("flag --%s (Config.%s) is not a --tracer.* flag", r.flag, r.field)
		}
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if from, ok := fieldsWithoutFlag[f.Name]; ok {
			if rows[f.Name] > 0 {
				t.Errorf("Config.%s has a flag and comes from --%s", f.Name, from)
			}
			continue
		}
		switch rows[f.Name] {
		case 0:
			t.Errorf("Config.%s has no flag", f.Name)
			continue
		case 1:
		default:
			t.Errorf("Config.%s has %d flags", f.Name, rows[f.Name])
		}
		name := flagOf(f.Name)
		if app.GetFlag(name) == nil {
			t.Errorf("flag --%s (Config.%s) is not registered", name, f.Name)
		}
	}
	if n := typ.NumField() - len(fieldsWithoutFlag); len(flagRows) != n {
		t.Errorf("%d flags for %d fields that take one", len(flagRows), n)
	}
	for name, n := range flags {
		if n > 1 {
			t.Errorf("flag --%s is in %d rows", name, n)
		}
	}
	for name := range fieldsWithoutFlag {
		if _, ok := typ.FieldByName(name); !ok {
			t.Errorf("fieldsWithoutFlag names %s, which Config lacks", name)
		}
	}
}

func TestFlagsDefaults(t *testing.T) {
	app := kingpin.New("test", "")
	cfg := AddFlags(app)
	if _, err := app.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, NewDefaultConfig()) {
		t.Errorf("config from default flags:\n%+v\nwant the defaults:\n%+v", cfg, NewDefaultConfig())
	}
	if msgs := FlagErrors(cfg.Validate()); msgs != nil {
		t.Errorf("defaults are invalid: %v", msgs)
	}
}

func TestFlagsParse(t *testing.T) {
	app := kingpin.New("test", "")
	cfg := AddFlags(app)
	_, err := app.Parse([]string{
		"--no-tracer.collect-ipv6", "--no-tracer.collect-udp", "--tracer.udp-conn-timeout=45s", "--tracer.udp-hook=kprobe", "--tracer.tcp-iterator=tcp", "--tracer.tcp-conn-timeout=5m", "--tracer.max-tracked-connections=1024",
		"--tracer.max-closed-connections-buffered=10", "--tracer.max-connections-state-buffered=20",
		"--tracer.client-state-expiry=30s", "--tracer.max-clients=3", "--tracer.proc-root=/host/proc",
		"--tracer.cgroup-path=/sys/fs/cgroup/x", "--tracer.ring-buffer-bytes=65536", "--tracer.bpf-debug",
		"--no-tracer.enable-conntrack", "--tracer.conntrack-max-state-size=99", "--tracer.conntrack-interval=2s",
		"--no-tracer.dns-inspection", "--no-tracer.incoming-handshakes", "--tracer.collect-local-dns", "--tracer.dns-cache-size=7", "--tracer.dns-cache-bytes=8192", "--tracer.dns-cache-ttl=1m",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		CollectTCPConns: true, CollectUDPConns: false, CollectIPv6Conns: false,
		TCPConnTimeout: 5 * time.Minute, UDPConnTimeout: 45 * time.Second, UDPHook: UDPHookKprobe, TCPIterator: TCPIteratorTCP,
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

// TestFlagErrors: Validate's messages, through FlagErrors, name flags, not
// fields.
func TestFlagErrors(t *testing.T) {
	app := kingpin.New("test", "")
	cfg := AddFlags(app)
	if _, err := app.Parse([]string{"--tracer.max-clients=0", "--tracer.proc-root=", "--tracer.tcp-conn-timeout=10ms",
		"--tracer.udp-conn-timeout=0s", "--no-tracer.collect-tcp", "--no-tracer.collect-udp", "--tracer.udp-hook=fexit"}); err != nil {
		t.Fatal(err)
	}
	msgs := FlagErrors(cfg.Validate())
	for _, want := range []string{
		"--tracer.max-clients=0: must be at least 1",
		"--tracer.proc-root: must not be empty",
		"--tracer.tcp-conn-timeout=10ms: must be at least 1s",
		"--tracer.udp-conn-timeout=0s: must be at least 1s",
		`--tracer.udp-hook="fexit": must be "auto", "tracepoint", "fentry" or "kprobe"`,
		"--tracer.collect-tcp: is false and so is CollectUDPConns: nothing would be traced",
	} {
		if !slices.Contains(msgs, want) {
			t.Errorf("messages %q lack %q", msgs, want)
		}
	}
	if len(msgs) != 6 {
		t.Errorf("%d messages, want 6: %q", len(msgs), msgs)
	}
	for _, m := range msgs {
		if !strings.HasPrefix(m, "--tracer.") {
			t.Errorf("message %q does not start with a flag name", m)
		}
	}
	if got := FlagErrors(&FieldError{Field: "SomethingElse", Value: 3, Msg: "bad"}); !slices.Equal(got, []string{"SomethingElse 3: bad"}) {
		t.Errorf("unknown field rewritten: %q", got)
	}
	if got := FlagErrors(nil); got != nil {
		t.Errorf("no error: %q", got)
	}
}

// TestValidateFieldErrors: Validate's errors are *FieldError values, one per
// bad field, with today's text; FlagErrors names each field's flag from
// flagRows (no message is parsed), a field without a flag keeps its name,
// and an error that only wraps a FieldError keeps its text.
func TestValidateFieldErrors(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.MaxClients = 0
	cfg.ProcRoot = ""
	cfg.ClosedRingBufferBytes = 5000
	cfg.UDPHook = ""
	err := cfg.Validate()
	want := []string{
		`UDPHook "": must be "auto", "tracepoint", "fentry" or "kprobe"`,
		"MaxClients 0: must be at least 1",
		"ProcRoot: must not be empty",
		"ClosedRingBufferBytes 5000: must be a power of two of at least 4096",
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("Validate: %q, want %q", got, strings.Join(want, "\n"))
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "UDPHook" {
		t.Errorf("errors.As finds %+v, want the UDPHook FieldError", fe)
	}
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		fe, ok := e.(*FieldError)
		if !ok {
			t.Fatalf("%T %v is not a *FieldError", e, e)
		}
		fields = append(fields, fe.Field)
		if flagOf(fe.Field) == "" {
			t.Errorf("Config.%s has no flag", fe.Field)
		}
	}
	if !slices.Equal(fields, []string{"UDPHook", "MaxClients", "ProcRoot", "ClosedRingBufferBytes"}) {
		t.Errorf("fields %q", fields)
	}
	if got := FlagErrors(err); !slices.Equal(got, []string{
		`--tracer.udp-hook="": must be "auto", "tracepoint", "fentry" or "kprobe"`,
		"--tracer.max-clients=0: must be at least 1",
		"--tracer.proc-root: must not be empty",
		"--tracer.ring-buffer-bytes=5000: must be a power of two of at least 4096",
	}) {
		t.Errorf("FlagErrors: %q", got)
	}

	// The flag comes from the table: a field whose message text says
	// nothing of it still gets it.
	if got := FlagErrors(&FieldError{Field: "ClosedRingBufferBytes", Msg: "x"}); !slices.Equal(got, []string{"--tracer.ring-buffer-bytes: x"}) {
		t.Errorf("FieldError without a value: %q", got)
	}
	// Unknown fields, and fields without a flag, keep their name.
	for _, e := range []*FieldError{{Field: "NoSuchField", Value: 1, Msg: "bad"}, {Field: "Filters", Msg: "bad"}} {
		if got := FlagErrors(e); !slices.Equal(got, []string{e.Error()}) {
			t.Errorf("%s: %q, want %q", e.Field, got, e.Error())
		}
	}
	// A cause is unwrapped and said after the message.
	cause := errors.New("no such file or directory")
	ce := &FieldError{Field: "CgroupPath", Value: "/x", Err: cause}
	if ce.Error() != "CgroupPath /x: no such file or directory" || !errors.Is(ce, cause) {
		t.Errorf("FieldError with a cause: %q, Is %v", ce.Error(), errors.Is(ce, cause))
	}
	if got := FlagErrors(ce); !slices.Equal(got, []string{"--tracer.cgroup-path=/x: no such file or directory"}) {
		t.Errorf("FlagErrors with a cause: %q", got)
	}
	// Wrapped, the message starts with other words: it is left alone.
	wrapped := errors.Join(fmtWrap(ce), errors.New("other"))
	if got := FlagErrors(wrapped); !slices.Equal(got, []string{"starting: CgroupPath /x: no such file or directory", "other"}) {
		t.Errorf("FlagErrors of wrapped errors: %q", got)
	}
}

func fmtWrap(err error) error { return &wrapErr{err} }

type wrapErr struct{ err error }

func (w *wrapErr) Error() string { return "starting: " + w.err.Error() }
func (w *wrapErr) Unwrap() error { return w.err }

// TestFlagsBadValues: a value that does not parse gives an error that names
// the flag and says what it expected.
func TestFlagsBadValues(t *testing.T) {
	for arg, want := range map[string]string{
		"--tracer.max-clients=ten":                 "--tracer.max-clients=ten: not an integer",
		"--tracer.max-tracked-connections=-1":      "--tracer.max-tracked-connections=-1: not an integer from 0 to 4294967295",
		"--tracer.ring-buffer-bytes=8MiB":          "--tracer.ring-buffer-bytes=8MiB: not an integer from 0 to 4294967295",
		"--tracer.udp-conn-timeout=30":             "--tracer.udp-conn-timeout=30: not a duration (such as 500ms, 30s, 2m, 1h)",
		"--tracer.client-state-expiry=soon":        "--tracer.client-state-expiry=soon: not a duration (such as 500ms, 30s, 2m, 1h)",
		"--tracer.max-connections-state-buffered=": "--tracer.max-connections-state-buffered=: not an integer",
	} {
		app := kingpin.New("test", "")
		AddFlags(app)
		if _, err := app.Parse([]string{arg}); err == nil || err.Error() != want {
			t.Errorf("%s: error %v, want %q", arg, err, want)
		}
	}
}
