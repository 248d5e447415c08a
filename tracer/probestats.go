package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// errEPERM: lockdown answers EPERM on some tracefs files.
var errEPERM error = unix.EPERM

// defaultKprobeProfiles are where kprobe_profile is looked for when
// Config.KprobeProfile is empty: tracefs, then tracefs under debugfs.
var defaultKprobeProfiles = []string{"/sys/kernel/tracing/kprobe_profile", "/sys/kernel/debug/tracing/kprobe_profile"}

// ProbeHits is one line of kprobe_profile: how often a kprobe fired, and
// how often it was missed (a kretprobe out of instances, or recursion).
type ProbeHits struct {
	Hits, Misses uint64
}

// errNoKprobeProfile says kprobe_profile cannot be read: no kprobes in the
// kernel, tracefs not mounted, or lockdown. Not an error for the exporter.
var errNoKprobeProfile = errors.New("kprobe_profile not available")

// parseKprobeProfile reads kprobe_profile: one probe a line, "<event>
// <hits> <misses>". The file is system-wide, so it holds other tools'
// probes too; all are returned. Lines that are not three fields with two
// numbers are skipped and counted in malformed, as the seed skipped them.
func parseKprobeProfile(r io.Reader) (probes map[string]ProbeHits, malformed int, err error) {
	probes = map[string]ProbeHits{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			malformed++
			continue
		}
		hits, err1 := strconv.ParseUint(f[1], 10, 64)
		misses, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			malformed++
			continue
		}
		p := probes[f[0]] // the same event twice (two tools): add up
		probes[f[0]] = ProbeHits{Hits: p.Hits + hits, Misses: p.Misses + misses}
	}
	return probes, malformed, sc.Err()
}

func readKprobeProfile(path string) (map[string]ProbeHits, error) {
	paths := defaultKprobeProfiles
	if path != "" {
		paths = []string{path}
	}
	var errs []error
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		probes, _, err := parseKprobeProfile(f)
		f.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return probes, nil
	}
	err := errors.Join(errs...)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, errEPERM) {
		return nil, fmt.Errorf("%w: %v", errNoKprobeProfile, err)
	}
	return nil, fmt.Errorf("reading kprobe_profile: %w", err)
}
