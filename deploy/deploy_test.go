package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/conntrace/conntrace_exporter/internal/testenv"
)

// TestDaemonSet: host network and PID, not privileged, every capability
// dropped but the documented ones, the host's cgroup mounted where the
// flag points, and every argument a flag the binary knows.
func TestDaemonSet(t *testing.T) {
	ds, err := ReadDaemonSet("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID {
		t.Error("the pod needs the host's network and PID namespaces")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("privileged and allowPrivilegeEscalation must be set, to false")
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range sc.Capabilities.Add {
		if !bytes.Contains(readme, []byte("CAP_"+cp)) {
			t.Errorf("capability %s is not documented in the README", cp)
		}
	}
	for _, need := range []string{"BPF", "PERFMON", "NET_ADMIN"} {
		if !slices.Contains(sc.Capabilities.Add, need) {
			t.Errorf("capability %s (required) not added", need)
		}
	}

	// arg is the value of a flag of the container; mounted says whether
	// some volume that is wanted is mounted at a path where wants it.
	arg := func(flag string) string {
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				return v
			}
		}
		return ""
	}
	mounted := func(wanted func(v *Volume) bool, where func(mountPath string) bool) bool {
		for _, m := range c.VolumeMounts {
			for i := range spec.Volumes {
				if v := &spec.Volumes[i]; v.Name == m.Name && wanted(v) && where(m.MountPath) {
					return true
				}
			}
		}
		return false
	}
	cgroupFlag := arg("--tracer.cgroup-path")
	if !mounted(func(v *Volume) bool { return v.HostPath.Path == "/sys/fs/cgroup" }, func(p string) bool { return p == cgroupFlag }) {
		t.Errorf("--tracer.cgroup-path=%q is not the host's /sys/fs/cgroup mounted into the container", cgroupFlag)
	}

	help, err := exec.Command(testenv.BuildExporter(t), "--help-long").CombinedOutput()
	if err != nil {
		t.Fatalf("--help-long: %v\n%s", err, help)
	}
	for _, a := range c.Args {
		name, _, _ := strings.Cut(a, "=")
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(name) + `[=\s]`).Match(help) {
			t.Errorf("argument %s: the exporter has no such flag", a)
		}
	}
	// Basic auth: --web.config.file is web-config.yml, from the Secret the
	// README says to make of it.
	webConfig := arg("--web.config.file")
	fromSecret := mounted(func(v *Volume) bool { return v.Secret.SecretName == "conntrace-web-config" },
		func(p string) bool { return webConfig == p+"/web-config.yml" })
	if !fromSecret {
		t.Errorf("--web.config.file=%q is not web-config.yml of the Secret conntrace-web-config", webConfig)
	}
	if !bytes.Contains(readme, []byte("create secret generic conntrace-web-config --from-file=web-config.yml")) {
		t.Error("the README does not say how to make the Secret conntrace-web-config")
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9476 {
		t.Errorf("ports %v, want 9476 (the default of --web.listen-address)", c.Ports)
	}
}

// TestPrometheusConfig: promtool checks the scrape configuration with the
// mixin's rules beside it, and it scrapes with a client_id.
func TestPrometheusConfig(t *testing.T) {
	promtool := testenv.Tool(t, "promtool")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "conntrace"), 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		"../mixin/out/rules.yaml":  "conntrace/rules.yaml",
		"../mixin/out/alerts.yaml": "conntrace/alerts.yaml",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Debian's promtool is built without Kubernetes service discovery:
	// promtool checks the job with a static target in its place, and the
	// discovery block is checked against the DaemonSet here.
	raw, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	job := doc["scrape_configs"].([]any)[0].(map[string]any)
	sd, _ := yaml.Marshal(job["kubernetes_sd_configs"])
	var sds []struct {
		Role       string
		Namespaces struct{ Names []string }
	}
	if err := yaml.Unmarshal(sd, &sds); err != nil || len(sds) != 1 || sds[0].Role != "pod" || !slices.Equal(sds[0].Namespaces.Names, []string{"conntrace"}) {
		t.Errorf("kubernetes_sd_configs %+v (%v): want the pods of namespace conntrace, the DaemonSet's", sds, err)
	}
	relabel, _ := yaml.Marshal(job["relabel_configs"])
	if !bytes.Contains(relabel, []byte("regex: conntrace-exporter")) || !bytes.Contains(relabel, []byte("__meta_kubernetes_pod_label_app_kubernetes_io_name")) {
		t.Errorf("relabel_configs do not keep the DaemonSet's pods (app.kubernetes.io/name=conntrace-exporter):\n%s", relabel)
	}
	delete(job, "kubernetes_sd_configs")
	job["static_configs"] = []any{map[string]any{"targets": []any{"node-1:9476"}}}
	static, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), static, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("SUCCESS: 2 rule files found")) {
		t.Errorf("the mixin's rule files were not checked:\n%s", out)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName string              `yaml:"job_name"`
			Params  map[string][]string `yaml:"params"`
		} `yaml:"scrape_configs"`
	}
	b, _ := os.ReadFile("prometheus.yml")
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("basic_auth:")) {
		t.Error("the job does not authenticate: the DaemonSet's exporter asks for basic auth")
	}
	if len(cfg.ScrapeConfigs) != 1 || len(cfg.ScrapeConfigs[0].Params["client_id"]) != 1 {
		t.Errorf("want one job scraping with one client_id: %+v", cfg.ScrapeConfigs)
	}
}

// TestDockerfileBuild runs the Dockerfile's build command (it cannot be
// built as an image here): the binary must be static, for the distroless
// static base, and the image must expose the default port.
func TestDockerfileBuild(t *testing.T) {
	f, err := os.Open("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var build, base string
	var stages int
	exposes := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			stages++
			base = strings.Fields(line)[1]
		case strings.HasPrefix(line, "RUN ") && strings.Contains(line, "go build"):
			build = strings.TrimPrefix(line, "RUN ")
		case line == "EXPOSE 9476":
			exposes = true
		}
	}
	if stages < 2 || !strings.Contains(base, "static") {
		t.Errorf("want a multi-stage build ending on a static base image, got %d stages ending on %s", stages, base)
	}
	if !exposes {
		t.Error("the image does not EXPOSE 9476")
	}
	out := filepath.Join(t.TempDir(), "conntrace_exporter")
	build = strings.Replace(build, "-o /conntrace_exporter", "-o "+out, 1)
	if !strings.Contains(build, out) || !strings.Contains(build, "CGO_ENABLED=0") {
		t.Fatalf("unexpected build command %q", build)
	}
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, b)
	}
	ef, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: it will not run on the static base image")
		}
	}
	if v, err := exec.Command(out, "--version").CombinedOutput(); err != nil || !bytes.Contains(v, []byte("conntrace_exporter")) {
		t.Errorf("--version: %v: %s", err, v)
	}
}
