package mixin

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-jsonnet"
	"github.com/google/go-jsonnet/formatter"
	"github.com/google/go-jsonnet/linter"
	"go.yaml.in/yaml/v3"

	"github.com/conntrace/conntrace_exporter/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite mixin/out from the jsonnet, and format the jsonnet sources")

// outFiles are the committed renderings: what a user without jsonnet loads.
func outFiles(t *testing.T, r *Rendered) map[string][]byte {
	t.Helper()
	files := map[string][]byte{"alerts.yaml": r.Alerts, "rules.yaml": r.Rules}
	for name, d := range r.Dashboards {
		files[filepath.Join("dashboards", name)] = d
	}
	return files
}

// TestRenderedUpToDate: mixin/out is what the jsonnet renders (make mixin
// rewrites it), and the CLI entry points (alerts.jsonnet, rules.jsonnet,
// dashboards.jsonnet) render the same.
func TestRenderedUpToDate(t *testing.T) {
	r, err := Render("{}")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range outFiles(t, r) {
		path := filepath.Join("out", name)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not what the mixin renders (%v): run 'make mixin' and commit", path, err)
		}
	}
	vm := jsonnet.MakeVM()
	for _, entry := range []struct {
		file string
		want []byte
	}{{"alerts.jsonnet", r.Alerts}, {"rules.jsonnet", r.Rules}} {
		out, err := vm.EvaluateFile(entry.file)
		if err != nil {
			t.Fatalf("%s: %v", entry.file, err)
		}
		var s string
		if err := yaml.Unmarshal([]byte(out), &s); err != nil { // a JSON string: jsonnet -S prints it raw
			t.Fatalf("%s: %v", entry.file, err)
		}
		if s+"\n" != string(entry.want) {
			t.Errorf("%s renders differently from Render", entry.file)
		}
	}
	out, err := vm.EvaluateFile("dashboards.jsonnet")
	if err != nil {
		t.Fatal(err)
	}
	for name := range r.Dashboards {
		if !strings.Contains(out, `"`+name+`"`) {
			t.Errorf("dashboards.jsonnet lacks %s", name)
		}
	}
}

func jsonnetSources(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.jsonnet", "*.libsonnet", "*/*.libsonnet"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 8 {
		t.Fatalf("only %d jsonnet files found: %v", len(files), files)
	}
	return files
}

// TestJsonnetFormattedAndLinted: jsonnetfmt's style (2 spaces, single
// quotes) and no jsonnet-lint finding.
func TestJsonnetFormattedAndLinted(t *testing.T) {
	opts := formatter.DefaultOptions()
	for _, f := range jsonnetSources(t) {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := formatter.Format(f, string(src), opts)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if got != string(src) {
			if *update {
				if err := os.WriteFile(f, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			t.Errorf("%s is not formatted: run 'make mixin'", f)
		}
		vm := jsonnet.MakeVM()
		vm.Importer(&jsonnet.FileImporter{JPaths: []string{"."}})
		var out bytes.Buffer
		if failed := linter.LintSnippet(vm, &out, []linter.Snippet{{FileName: f, Code: string(src)}}); failed {
			t.Errorf("jsonnet-lint %s:\n%s", f, out.String())
		}
	}
}

// promtool is Debian's (scripts/install-deps.sh installs it).
func promtool(t *testing.T) string { return testenv.Tool(t, "promtool") }

func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", "out/alerts.yaml", "out/rules.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestPromtoolTestRules runs every unit test file of tests/: the alerts
// (alerts_test.yaml) and the per-workload recording rules
// (workloads_test.yaml).
func TestPromtoolTestRules(t *testing.T) {
	files, err := filepath.Glob("tests/*_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(files, "tests/alerts_test.yaml") || !slices.Contains(files, "tests/workloads_test.yaml") {
		t.Fatalf("unit test files %v: want alerts_test.yaml and workloads_test.yaml", files)
	}
	out, err := exec.Command(promtool(t), append([]string{"test", "rules"}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert, Record, Expr, For string
			Labels, Annotations      map[string]string
		}
	}
}

func readRules(t *testing.T, path string) ruleFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

// TestEveryAlertTestedFiringAndNot: tests/alerts_test.yaml has, for every
// alert, a case where it fires and one where it does not.
func TestEveryAlertTestedFiringAndNot(t *testing.T) {
	b, err := os.ReadFile("tests/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string
				ExpAlerts []any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	alerts := 0
	for _, g := range readRules(t, "out/alerts.yaml").Groups {
		for _, r := range g.Rules {
			alerts++
			if !firing[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: tested firing %v, not firing %v; want both", r.Alert, firing[r.Alert], quiet[r.Alert])
			}
		}
	}
	if alerts < 8 {
		t.Errorf("%d alerts; the issue asks for at least 8 kinds", alerts)
	}
}

// TestAlertGuidelines: the monitoring-mixins guidelines mixtool lint
// enforces (mixtool cannot be installed here), and a runbook section in
// mixin/README.md for every alert.
func TestAlertGuidelines(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	camel := regexp.MustCompile(`^Conntrace[A-Z][A-Za-z0-9]+$`)
	for _, path := range []string{"out/alerts.yaml", "out/rules.yaml"} {
		for _, g := range readRules(t, path).Groups {
			if len(g.Name) > 40 || len(g.Rules) > 20 {
				t.Errorf("group %s: name over 40 characters or more than 20 rules", g.Name)
			}
			for _, r := range g.Rules {
				if r.Record != "" {
					if !regexp.MustCompile(`^[a-z_]+:conntrace_[a-z_]+:[a-z0-9_]+$`).MatchString(r.Record) {
						t.Errorf("recording rule %s: not level:metric:operation", r.Record)
					}
					continue
				}
				a := r.Alert
				if !camel.MatchString(a) || len(a) > 40 {
					t.Errorf("%s: want CamelCase with the Conntrace prefix, at most 40 characters", a)
				}
				if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
					t.Errorf("%s: severity %q", a, r.Labels["severity"])
				}
				s := r.Annotations["summary"]
				if s == "" || strings.Contains(s, "{{") || !strings.HasSuffix(s, ".") || s[:1] != strings.ToUpper(s[:1]) {
					t.Errorf("%s: summary %q: want a static sentence, capitalised, ending with a period", a, s)
				}
				if d := r.Annotations["description"]; !strings.Contains(d, "{{ $labels.instance }}") {
					t.Errorf("%s: description %q is not templated with the instance", a, d)
				}
				anchor := "#" + strings.ToLower(a)
				if !strings.HasSuffix(r.Annotations["runbook_url"], "mixin/README.md"+anchor) {
					t.Errorf("%s: runbook_url %q", a, r.Annotations["runbook_url"])
				}
				if !bytes.Contains(readme, []byte("\n### "+a+"\n")) {
					t.Errorf("%s: no runbook section (### %s) in mixin/README.md", a, a)
				}
				if r.For == "" {
					t.Errorf("%s: no for: duration", a)
				}
			}
		}
	}
}
