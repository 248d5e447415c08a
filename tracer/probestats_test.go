package tracer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKprobeProfileRealLines(t *testing.T) {
	f, err := os.Open("testdata/kprobe/kprobe_profile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	probes, malformed, err := ParseKprobeProfile(f)
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
	probes, malformed, err := ParseKprobeProfile(f)
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
	if !errors.Is(err, ErrNoKprobeProfile) {
		t.Errorf("missing file: %v, want ErrNoKprobeProfile", err)
	}
}

func FuzzParseKprobeProfile(f *testing.F) {
	for _, p := range []string{"testdata/kprobe/kprobe_profile", "testdata/kprobe/malformed"} {
		b, _ := os.ReadFile(p)
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, s string) {
		probes, malformed, err := ParseKprobeProfile(strings.NewReader(s))
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
