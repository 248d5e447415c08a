package tracer

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigHZ(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "config")
	os.WriteFile(plain, []byte("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"), 0o600)
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte("CONFIG_HZ_1000=y\nCONFIG_HZ=1000\n"))
	w.Close()
	zipped := filepath.Join(dir, "config.gz")
	os.WriteFile(zipped, gz.Bytes(), 0o600)
	none := filepath.Join(dir, "none")
	os.WriteFile(none, []byte("CONFIG_HZ_250=y\n"), 0o600)
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("CONFIG_HZ=fast\n"), 0o600)
	for path, want := range map[string]uint32{plain: 250, zipped: 1000} {
		if hz, err := configHZ(path); err != nil || hz != want {
			t.Errorf("configHZ(%s) = %d, %v; want %d", filepath.Base(path), hz, err, want)
		}
	}
	for path, wantErr := range map[string]string{none: "no CONFIG_HZ", bad: `CONFIG_HZ="fast" is not a tick rate`, filepath.Join(dir, "missing"): "no such file"} {
		if _, err := configHZ(path); err == nil || !strings.Contains(err.Error(), wantErr) || !strings.Contains(err.Error(), filepath.Base(path)) {
			t.Errorf("configHZ(%s): %v, want an error naming the file and %q", filepath.Base(path), err, wantErr)
		}
	}
}

func TestNearestHZ(t *testing.T) {
	for rate, want := range map[float64]uint32{96: 100, 241: 250, 262: 250, 291: 300, 1040: 1000} {
		if hz, err := nearestHZ(rate); err != nil || hz != want {
			t.Errorf("nearestHZ(%v) = %d, %v; want %d", rate, hz, err, want)
		}
	}
	for _, rate := range []float64{0, 50, 500, 2000} {
		if hz, err := nearestHZ(rate); err == nil {
			t.Errorf("nearestHZ(%v) = %d, want an error", rate, hz)
		}
	}
}

func TestParseJiffies(t *testing.T) {
	in := "Timer List Version: v0.9\nnow at 1 nsecs\ncpu: 0\n  .idle_jiffies   : 99\njiffies: 4316105285\njiffies: 1\n"
	if j, err := parseJiffies("timer_list", strings.NewReader(in)); err != nil || j != 4316105285 {
		t.Errorf("parseJiffies = %d, %v; want the first jiffies line's 4316105285", j, err)
	}
	if _, err := parseJiffies("timer_list", strings.NewReader("cpu: 0\n")); err == nil || !strings.Contains(err.Error(), "no jiffies line") {
		t.Errorf("without a jiffies line: %v", err)
	}
}

// Where the kernel's configuration is readable (this host), the measured
// rate is the configured one: the fallback the matrix's guests use
// (they have no configuration file) measures right.
func TestMeasuredHZIsConfigured(t *testing.T) {
	want, err := configHZ("/proc/config.gz")
	if err != nil {
		t.Skipf("no kernel configuration to compare with: %v", err) // the guests: there checkSendLimits compares with TCP_INFO
	}
	got, err := measureHZ("/proc/timer_list", 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("measured %d Hz, CONFIG_HZ=%d", got, want)
	}
}
