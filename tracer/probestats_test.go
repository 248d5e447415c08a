package tracer

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
)

func TestParseKprobeProfileRealLines(t *testing.T) {
	f, err := os.Open("testdata/kprobe/kprobe_profile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	probes, malformed, err := parseKprobeProfile(f)
	if err != nil || malformed != 0 {
		t.Fatalf("err %v malformed %d", err, malformed)
	}
	want := map[string]ProbeHits{
		"ptcp_v4_connect": {12345, 0}, "rinet_csk_accept": {6789, 3},
		"r_tcp_v4_connect_0": {42, 0}, // another tool's (bcc) probe
		"p_ext4_sync_file_0": {100000, 17},
	}
	if len(probes) != len(want) {
		t.Errorf("%d probes, want %d: %v", len(probes), len(want), probes)
	}
	for k, w := range want {
		if probes[k] != w {
			t.Errorf("%s: %+v, want %+v", k, probes[k], w)
		}
	}
}

func TestParseKprobeProfileSkipsAndCountsMalformed(t *testing.T) {
	f, _ := os.Open("testdata/kprobe/malformed")
	defer f.Close()
	probes, malformed, err := parseKprobeProfile(f)
	if err != nil {
		t.Fatal(err)
	}
	if malformed != 4 {
		t.Errorf("malformed %d, want 4", malformed)
	}
	if p := probes["ptcp_sendmsg"]; p != (ProbeHits{15, 3}) || len(probes) != 1 {
		t.Errorf("probes %v, want ptcp_sendmsg {15 3} only (the same event twice adds up)", probes)
	}
}

func TestGetProbeStatsSeedForm(t *testing.T) {
	st, err := GetProbeStats("testdata/kprobe/kprobe_profile")
	if err != nil {
		t.Fatal(err)
	}
	if st["rinet_csk_accept_hits"] != 6789 || st["rinet_csk_accept_misses"] != 3 || len(st) != 8 {
		t.Errorf("stats %v", st)
	}
}

// Where kprobe_profile is missing (no kprobes, as on this project's
// kernel) or refused (lockdown), the error says so and is not fatal.
func TestGetProbeStatsUnavailable(t *testing.T) {
	_, err := GetProbeStats(filepath.Join(t.TempDir(), "kprobe_profile"))
	if !errors.Is(err, errNoKprobeProfile) {
		t.Errorf("missing file: %v, want errNoKprobeProfile", err)
	}
}

func FuzzParseKprobeProfile(f *testing.F) {
	for _, p := range []string{"testdata/kprobe/kprobe_profile", "testdata/kprobe/malformed"} {
		b, _ := os.ReadFile(p)
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, s string) {
		probes, malformed, err := parseKprobeProfile(strings.NewReader(s))
		if err != nil {
			return // a line over 1 MiB
		}
		lines := 0
		for _, l := range strings.Split(s, "\n") {
			if len(strings.Fields(l)) > 0 {
				lines++
			}
		}
		if malformed > lines || len(probes) > lines {
			t.Fatalf("%d probes and %d malformed from %d lines", len(probes), malformed, lines)
		}
	})
}

// Where the kernel has kprobes, kprobe_profile shows the exporter's own
// kretprobes (attached through tracefs for their maxactive) with at least
// one hit per call they followed; where it has none, the statistics are
// absent and say why.
func TestKprobeProfileShowsOurKretprobes(t *testing.T) {
	nettest.RequireRoot(t)
	if err := UDPHookPossible(UDPHookKprobe); err != nil {
		if _, err := GetProbeStats(""); !errors.Is(err, errNoKprobeProfile) {
			t.Fatalf("no kprobe fallback here, but kprobe_profile: %v", err)
		}
		t.Logf("no kprobes here, and no kprobe statistics: %v", err)
		return
	}
	tracefsEvents(t) // mounted, for the maxactive kretprobes
	newTestTracer(t, func(c *Config) { c.UDPHook = UDPHookKprobe; c.CollectTCPConns = false })
	p := nettest.NewPair(t)
	const port, n = 7011, 25
	udpServer(t, p, p.Server4, port, func(int) int { return 1 })
	before, _ := GetProbeStats("")
	c := dialUDP(t, p, netip.AddrPortFrom(p.Server4, port))
	for i := 0; i < n; i++ {
		if _, err := c.Write([]byte("kprobe")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
	}
	after, err := GetProbeStats("")
	if err != nil {
		t.Fatalf("kprobes attached, but kprobe_profile: %v", err)
	}
	var found bool
	for name, hits := range after {
		if strings.HasSuffix(name, "_hits") && strings.Contains(name, "udp_sendmsg") {
			found = true
			if d := hits - before[name]; d < n {
				t.Errorf("%s: %d hits for %d sends", name, d, n)
			}
		}
	}
	if !found {
		t.Errorf("no udp_sendmsg kretprobe in kprobe_profile: %v", after)
	}
}

// The seed's form of the probe statistics; production reads them with
// readKprobeProfile (Stats().Probes).

// GetProbeStats reads kprobe_profile at path, or at the default places when
// path is empty, in the seed's form: "<event>_hits" and "<event>_misses".
// A missing or unreadable file (ENOENT, EPERM, EACCES: no kprobes, lockdown)
// gives an error wrapping errNoKprobeProfile.
func GetProbeStats(path string) (map[string]int64, error) {
	probes, err := readKprobeProfile(path)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, 2*len(probes))
	for name, p := range probes {
		out[name+"_hits"] = int64(p.Hits)
		out[name+"_misses"] = int64(p.Misses)
	}
	return out, nil
}
