// Package testenv holds what the tests of several packages need from the
// machine: installed tools and the built exporter.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Tool returns the path of the first of names (names looked up on PATH, or
// paths) that exists. None fails the test under CI=true, where every test
// must run, and skips it otherwise; scripts/install-deps.sh installs them.
func Tool(t testing.TB, names ...string) string {
	t.Helper()
	var err error
	for _, name := range names {
		var path string
		if path, err = exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing, and CI=true: the test must run (scripts/install-deps.sh installs it): %v", names[0], err)
	}
	t.Skipf("%s is missing (scripts/install-deps.sh installs it): %v", names[0], err)
	return ""
}

// BuildExporter builds the module's main package into a temporary
// directory and returns the binary.
func BuildExporter(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: not in a module (%q)", gomod)
	}
	bin := filepath.Join(t.TempDir(), "conntrace_exporter")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
