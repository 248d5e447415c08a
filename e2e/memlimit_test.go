package e2e

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conntrace/conntrace_exporter/internal/nettest"
	"github.com/conntrace/conntrace_exporter/internal/testenv"
)

// The exporter in a memory cgroup of 256 MiB sets the Go runtime's soft
// limit to 0.9 of it (--auto-gomemlimit), or to --auto-gomemlimit.ratio of
// it; GOMEMLIMIT in the environment wins; --no-auto-gomemlimit leaves the
// runtime without a limit; a ratio outside (0, 1] is refused, named.
func TestAutoGoMemLimitFromCgroup(t *testing.T) {
	nettest.RequireRoot(t)
	bin := testenv.BuildExporter(t)
	const limit = 256 << 20
	cg := memoryCgroup(t, limit)

	for _, tc := range []struct {
		name string
		args []string
		env  string
		want float64
	}{
		{"default", nil, "", math.Floor(0.9 * limit)},
		{"ratio", []string{"--auto-gomemlimit.ratio=0.5"}, "", 0.5 * limit},
		{"environment", nil, "GOMEMLIMIT=100MiB", 100 << 20},
		{"off", []string{"--no-auto-gomemlimit"}, "", math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			// The shell joins the cgroup, then becomes the exporter.
			script := fmt.Sprintf("echo $$ > %s && exec %s --web.listen-address=%s %s",
				filepath.Join(cg.dir, "cgroup.procs"), bin, addr, strings.Join(tc.args, " "))
			cmd := exec.Command("sh", "-c", script)
			cmd.Env = os.Environ()
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			p := start(t, cmd)
			waitHTTP(t, p, "http://"+addr+"/metrics", 60*time.Second)
			body, err := get("http://" + addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			mfs, err := parseMetrics(body)
			if err != nil {
				t.Fatal(err)
			}
			got, n := sumOf(mfs, "go_gc_gomemlimit_bytes", nil)
			if n != 1 || got != tc.want {
				t.Errorf("go_gc_gomemlimit_bytes = %v (%d series), want %v (cgroup %s, limit %d)", got, n, tc.want, cg.dir, limit)
			}
		})
	}

	out, err := exec.Command(bin, "--auto-gomemlimit.ratio=1.5").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "--auto-gomemlimit.ratio=1.5: must be in (0, 1]") {
		t.Errorf("--auto-gomemlimit.ratio=1.5: exit %d, output:\n%s\nwant exit 2 naming the flag and the range", code, out)
	}
}

// exitCode is the exit status of a command's error (0 for none, -1 when it
// did not exit).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

type cgroup struct{ dir string }

// memoryCgroup makes a cgroup with a memory limit beside the test's own
// (cgroup v1's memory controller, as on this machine's hybrid layout, or
// cgroup v2's where the memory controller is enabled), removed when the
// test ends.
func memoryCgroup(t *testing.T, limit int64) cgroup {
	t.Helper()
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var v1, v2 string
	s := bufio.NewScanner(f)
	for s.Scan() {
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case strings.Contains(","+parts[1]+",", ",memory,"):
			v1 = parts[2]
		}
	}
	name := fmt.Sprintf("conntrace-memlimit-%d", os.Getpid())
	var dir, file string
	switch {
	case v1 != "":
		dir, file = filepath.Join("/sys/fs/cgroup/memory", v1, name), "memory.limit_in_bytes"
	case v2 != "":
		root := "/sys/fs/cgroup"
		if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil {
			root = "/sys/fs/cgroup/unified"
		}
		parent := filepath.Join(root, v2)
		ctl, _ := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
		if !strings.Contains(string(ctl), "memory") {
			t.Fatalf("no cgroup memory controller to test with: cgroup v2 %s does not delegate memory (cgroup.subtree_control %q) and no v1 memory hierarchy", parent, ctl)
		}
		dir, file = filepath.Join(parent, name), "memory.max"
	default:
		t.Fatal("no memory cgroup in /proc/self/cgroup")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("making cgroup %s: %v", dir, err)
	}
	t.Cleanup(func() {
		// The processes in it are gone (start's cleanups ran first).
		for range 50 {
			if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("removing cgroup %s: still busy", dir)
	})
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Fatalf("limiting cgroup %s: %v", dir, err)
	}
	return cgroup{dir: dir}
}
