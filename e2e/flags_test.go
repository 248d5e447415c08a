package e2e

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/conntrace/conntrace_exporter/internal/testenv"
)

// Every flag --help lists is in the README (its Flags section names them
// all, or its table), so that a new flag cannot go undocumented.
func TestEveryFlagInTheREADME(t *testing.T) {
	bin := testenv.BuildExporter(t)
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	flags := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--(?:\[no-\])?([a-z0-9.-]+)`).FindAllStringSubmatch(string(out), -1)
	if len(flags) < 30 {
		t.Fatalf("%d flags found in --help:\n%s", len(flags), out)
	}
	for _, f := range flags {
		name := f[1]
		switch name {
		case "help", "help-long", "help-man", "version":
			continue
		}
		if !strings.Contains(string(readme), "--"+name+"`") && !strings.Contains(string(readme), "--[no-]"+name+"`") {
			t.Errorf("--%s is not in the README", name)
		}
	}
}
