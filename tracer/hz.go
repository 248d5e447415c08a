package tracer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The rates Linux builds with on the architectures this exporter runs on
// (x86, arm64: Kconfig's HZ_100, HZ_250, HZ_300, HZ_1000).
var knownHZ = []uint32{100, 250, 300, 1000}

// kernelHZ finds the kernel's tick rate (CONFIG_HZ), the unit of TCP's
// chrono stats (what limited sending): from the kernel's configuration,
// else measured. how says which.
func kernelHZ() (hz uint32, how string, err error) {
	release := ""
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		release = unix.ByteSliceToString(u.Release[:])
	}
	var errs []error
	for _, path := range []string{"/proc/config.gz", "/boot/config-" + release} {
		hz, err := configHZ(path)
		if err == nil {
			return hz, path, nil
		}
		errs = append(errs, err)
	}
	hz, err = measureHZ("/proc/timer_list", 200*time.Millisecond)
	if err == nil {
		return hz, "measured from /proc/timer_list", nil
	}
	return 0, "", errors.Join(append(errs, err)...)
}

// configHZ reads CONFIG_HZ from a kernel configuration file, gzipped or
// not.
func configHZ(path string) (uint32, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
	}
	return parseConfigHZ(path, data)
}

func parseConfigHZ(path string, data []byte) (uint32, error) {
	for line := range strings.Lines(string(data)) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "CONFIG_HZ=")
		if !ok {
			continue
		}
		hz, err := strconv.ParseUint(v, 10, 32)
		if err != nil || hz == 0 {
			return 0, fmt.Errorf("%s: CONFIG_HZ=%q is not a tick rate", path, v)
		}
		return uint32(hz), nil
	}
	return 0, fmt.Errorf("%s: no CONFIG_HZ", path)
}

// measureHZ counts the jiffies /proc/timer_list shows over span of the
// monotonic clock (the kernel's own: jiffies follow it), and rounds the
// rate to the nearest rate Linux builds with; an error if none is within
// 8 % (250 and 300 then never both match).
func measureHZ(path string, span time.Duration) (uint32, error) {
	j0, t0, err := readJiffies(path)
	if err != nil {
		return 0, err
	}
	time.Sleep(span)
	j1, t1, err := readJiffies(path)
	if err != nil {
		return 0, err
	}
	return nearestHZ(float64(j1-j0) / t1.Sub(t0).Seconds())
}

func nearestHZ(rate float64) (uint32, error) {
	for _, hz := range knownHZ {
		if d := rate/float64(hz) - 1; d > -0.08 && d < 0.08 {
			return hz, nil
		}
	}
	return 0, fmt.Errorf("measured %.0f jiffies a second: not a tick rate Linux builds with (%v)", rate, knownHZ)
}

// readJiffies reads the first "jiffies:" line of /proc/timer_list, and
// when (the monotonic clock: midway through the read).
func readJiffies(path string) (uint64, time.Time, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer f.Close()
	j, err := parseJiffies(path, f)
	if err != nil {
		return 0, time.Time{}, err
	}
	return j, start.Add(time.Since(start) / 2), nil
}

func parseJiffies(path string, r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "jiffies: ")
		if !ok {
			continue
		}
		j, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: jiffies %q: %w", path, v, err)
		}
		return j, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return 0, fmt.Errorf("%s: no jiffies line", path)
}
