// Package mixin renders conntrace_exporter's monitoring mixin (the jsonnet
// beside this file) with go-jsonnet: no jsonnet binary, grafonnet or
// jsonnet-bundler needed.
package mixin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-jsonnet"
)

// Rendered is the mixin as Prometheus and Grafana load it.
type Rendered struct {
	Alerts     []byte            // Prometheus rule file (YAML)
	Rules      []byte            // Prometheus rule file (YAML)
	Dashboards map[string][]byte // file name -> Grafana dashboard JSON
}

// Dir is the mixin's source directory.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Render evaluates mixin.libsonnet with config merged into its _config
// (a jsonnet object, "{}" for the defaults).
func Render(config string) (*Rendered, error) {
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{Dir()}})
	snippet := fmt.Sprintf(`
local m = (import 'mixin.libsonnet') + { _config+:: %s };
{
  alerts: std.manifestYamlDoc(m.prometheusAlerts, indent_array_in_object=false, quote_keys=false),
  rules: std.manifestYamlDoc(m.prometheusRules, indent_array_in_object=false, quote_keys=false),
  dashboards: m.grafanaDashboards,
}`, config)
	out, err := vm.EvaluateAnonymousSnippet("render.jsonnet", snippet)
	if err != nil {
		return nil, fmt.Errorf("evaluating the mixin: %w", err)
	}
	var raw struct {
		Alerts, Rules string
		Dashboards    map[string]json.RawMessage
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("reading the evaluated mixin: %w", err)
	}
	r := &Rendered{Alerts: []byte(raw.Alerts + "\n"), Rules: []byte(raw.Rules + "\n"), Dashboards: map[string][]byte{}}
	for name, d := range raw.Dashboards {
		var v any
		if err := json.Unmarshal(d, &v); err != nil {
			return nil, err
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // PromQL's > and < stay readable
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return nil, err
		}
		r.Dashboards[name] = b.Bytes()
	}
	return r, nil
}

// DashboardQueries returns every query of the dashboards with Grafana's
// variables filled in: rateInterval for $__rate_interval and $__range,
// instance (a regexp) for $instance, peer for $peer.
func DashboardQueries(r *Rendered, rateInterval, instance, peer string) []string {
	var out []string
	repl := strings.NewReplacer("$__rate_interval", rateInterval, "$__range", rateInterval, "$instance", instance, "$peer", peer)
	for _, raw := range r.Dashboards {
		var d struct {
			Panels []struct {
				Targets []struct{ Expr string }
			}
		}
		if json.Unmarshal(raw, &d) != nil {
			continue
		}
		for _, p := range d.Panels {
			for _, t := range p.Targets {
				out = append(out, repl.Replace(t.Expr))
			}
		}
	}
	return out
}
