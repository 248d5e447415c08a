package mixin

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"go.yaml.in/yaml/v3"
)

// dash is the part of a dashboard these checks read.
type dash struct {
	UID        string
	Title      string
	Templating struct {
		List []struct {
			Name, Type string
			Query      any
			Datasource *struct{ Type, UID string }
		}
	}
	Panels []struct {
		ID          int
		Type        string
		Title       string
		Description string
		Datasource  struct{ Type, UID string }
		FieldConfig struct {
			Defaults struct{ Unit string }
		}
		Targets []struct {
			Expr       string
			RefID      string
			Datasource struct{ Type, UID string }
		}
	}
}

func parseDash(t *testing.T, name string, raw []byte) dash {
	t.Helper()
	var d dash
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// TestDashboardsInGrafanaSchema: every dashboard unmarshals strictly into
// Grafana's dashboard schema (grafana-foundation-sdk: unknown fields and
// missing required ones are errors) and validates.
func TestDashboardsInGrafanaSchema(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	r, err := Render("{}")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Dashboards) != 4 {
		t.Errorf("%d dashboards, want overview, peer, workloads and health", len(r.Dashboards))
	}
	for name, raw := range r.Dashboards {
		var d dashboard.Dashboard
		err := d.UnmarshalJSONStrict(raw)
		// On success the SDK returns a typed nil cog.BuildErrors.
		if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
			err = nil
		}
		if err != nil {
			t.Errorf("%s: not in Grafana's schema: %v", name, err)
			continue
		}
		if err := d.Validate(); err != nil {
			if be, ok := err.(cog.BuildErrors); !ok || len(be) > 0 {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

// TestDashboardRules: the dashboard-linter rules that matter here (it
// cannot be installed): unique uids and panel ids, a datasource variable
// used by every panel and query, titles, descriptions and units, and
// $__rate_interval for rates of raw counters.
func TestDashboardRules(t *testing.T) {
	r, err := Render("{}")
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]string{}
	for name, raw := range r.Dashboards {
		d := parseDash(t, name, raw)
		if other, dup := uids[d.UID]; dup || d.UID == "" {
			t.Errorf("%s: uid %q empty or also %s's", name, d.UID, other)
		}
		uids[d.UID] = name
		hasDS := false
		for _, v := range d.Templating.List {
			if v.Type == "datasource" && v.Name == "datasource" && v.Query == "prometheus" {
				hasDS = true
			}
			if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
				t.Errorf("%s: variable %s does not use the datasource variable", name, v.Name)
			}
		}
		if !hasDS {
			t.Errorf("%s: no datasource variable", name)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			where := fmt.Sprintf("%s panel %d %q", name, p.ID, p.Title)
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: id not unique", where)
			}
			ids[p.ID] = true
			if p.Title == "" || p.Description == "" || p.FieldConfig.Defaults.Unit == "" {
				t.Errorf("%s: want a title, a description and a unit", where)
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: datasource %q, want ${datasource}", where, p.Datasource.UID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no query", where)
			}
			for _, tg := range p.Targets {
				if tg.Datasource.UID != "${datasource}" || tg.RefID == "" {
					t.Errorf("%s: query %q: datasource %q, refId %q", where, tg.Expr, tg.Datasource.UID, tg.RefID)
				}
				if strings.Contains(tg.Expr, "_total{") && strings.Contains(tg.Expr, "rate(") && !strings.Contains(tg.Expr, "[$__rate_interval]") {
					t.Errorf("%s: %q: rates of raw counters use $__rate_interval", where, tg.Expr)
				}
			}
		}
	}
}

// TestEveryQueryUsesTheSelector renders with another selector: every
// dashboard query and variable, and every rule, must carry it, and none the
// default.
func TestEveryQueryUsesTheSelector(t *testing.T) {
	const sel = `job="custom-conntrace"`
	r, err := Render(fmt.Sprintf("{ conntraceSelector: '%s' }", sel))
	if err != nil {
		t.Fatal(err)
	}
	exprs := DashboardQueries(r, "5m", ".+", "10.0.0.1")
	for name, raw := range r.Dashboards {
		for _, v := range parseDash(t, name, raw).Templating.List {
			if q, ok := v.Query.(map[string]any); ok {
				exprs = append(exprs, name+" variable: "+fmt.Sprint(q["query"]))
			}
		}
	}
	for _, f := range [][]byte{r.Alerts, r.Rules} {
		var rf ruleFile
		if err := yaml.Unmarshal(f, &rf); err != nil {
			t.Fatal(err)
		}
		for _, g := range rf.Groups {
			for _, rule := range g.Rules {
				exprs = append(exprs, rule.Alert+rule.Record+": "+rule.Expr)
			}
		}
	}
	for _, e := range exprs {
		if !strings.Contains(e, sel) || strings.Contains(e, `job="conntrace"`) {
			t.Errorf("not on the configured selector: %s", e)
		}
	}
	if len(exprs) < 40 {
		t.Errorf("only %d queries checked", len(exprs))
	}
}

// TestDashboardQueriesParse: every dashboard query, with Grafana's
// variables filled in, is valid PromQL to promtool.
func TestDashboardQueriesParse(t *testing.T) {
	pt := promtool(t)
	r, err := Render("{}")
	if err != nil {
		t.Fatal(err)
	}
	var rules []map[string]string
	for _, q := range DashboardQueries(r, "5m", ".+", "10.0.0.1") {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:query:%d", len(rules)), "expr": q})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queries.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(pt, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("dashboard queries do not parse: %v\n%s", err, out)
	}
}

// recordedName matches the names of recording rules (level:metric:operation).
var recordedName = regexp.MustCompile(`\b[a-z_]+:conntrace_[a-z_]+:[a-z0-9_]+\b`)

// TestQueriesReadRecordedRules: every recorded series a dashboard query or
// variable, an alert or a rule reads is recorded by a rule of the mixin,
// and the Workloads dashboard reads the per-workload rules only.
func TestQueriesReadRecordedRules(t *testing.T) {
	r, err := Render("{}")
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	var exprs []string
	for _, f := range [][]byte{r.Rules, r.Alerts} {
		var rf ruleFile
		if err := yaml.Unmarshal(f, &rf); err != nil {
			t.Fatal(err)
		}
		for _, g := range rf.Groups {
			for _, rule := range g.Rules {
				if rule.Record != "" {
					recorded[rule.Record] = true
				}
				exprs = append(exprs, rule.Alert+rule.Record+": "+rule.Expr)
			}
		}
	}
	for name, raw := range r.Dashboards {
		d := parseDash(t, name, raw)
		for _, v := range d.Templating.List {
			if q, ok := v.Query.(map[string]any); ok {
				exprs = append(exprs, name+" variable: "+fmt.Sprint(q["query"]))
			}
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				exprs = append(exprs, name+" "+p.Title+": "+tg.Expr)
				if name == "conntrace-workloads.json" && !strings.Contains(tg.Expr, "instance_workload:") {
					t.Errorf("%s panel %q: %q reads no per-workload rule", name, p.Title, tg.Expr)
				}
			}
		}
	}
	for _, e := range exprs {
		for _, m := range recordedName.FindAllString(e, -1) {
			if !recorded[m] {
				t.Errorf("%s: no rule records %s", e, m)
			}
		}
	}
	for _, want := range []string{
		"instance_workload:conntrace_bytes:rate5m",
		"instance_workload:conntrace_retransmit_ratio:rate5m",
		"instance_workload:conntrace_connection_failures:rate5m",
		"instance_workload:conntrace_connection_attempts:rate5m",
	} {
		if !recorded[want] {
			t.Errorf("no rule records %s", want)
		}
	}
}

// TestWorkloadLabelsConfigurable renders with other workloadLabels and
// workloadTopK: the per-workload rules aggregate and the Workloads
// dashboard joins by job, instance and those labels, and shows that many.
func TestWorkloadLabelsConfigurable(t *testing.T) {
	r, err := Render("{ workloadLabels: ['unit', 'pod_uid'], workloadTopK: 7 }")
	if err != nil {
		t.Fatal(err)
	}
	const by = "(job, instance, unit, pod_uid)"
	var rf ruleFile
	if err := yaml.Unmarshal(r.Rules, &rf); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rf.Groups {
		for _, rule := range g.Rules {
			if !strings.HasPrefix(rule.Record, "instance_workload:") {
				continue
			}
			n++
			if strings.Contains(rule.Expr, "sum by") && !strings.Contains(rule.Expr, "sum by "+by) {
				t.Errorf("%s: %s: want sum by %s", rule.Record, rule.Expr, by)
			}
			if strings.Contains(rule.Expr, "cgroup") || strings.Contains(rule.Expr, "container_id") {
				t.Errorf("%s: %s: a workload label not configured", rule.Record, rule.Expr)
			}
		}
	}
	if n < 8 {
		t.Errorf("%d per-workload rules", n)
	}
	d := parseDash(t, "conntrace-workloads.json", r.Dashboards["conntrace-workloads.json"])
	if len(d.Panels) == 0 {
		t.Fatal("no Workloads dashboard")
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if strings.Contains(tg.Expr, "cgroup") || strings.Contains(tg.Expr, "container_id") {
				t.Errorf("%s: %q: a workload label not configured", p.Title, tg.Expr)
			}
			if strings.Contains(tg.Expr, "topk(") && !strings.Contains(tg.Expr, "topk(7,") {
				t.Errorf("%s: %q: want topk(7, ...)", p.Title, tg.Expr)
			}
			if strings.Contains(tg.Expr, " on (") && !strings.Contains(tg.Expr, " on "+by) {
				t.Errorf("%s: %q: want on %s", p.Title, tg.Expr, by)
			}
		}
	}
}
