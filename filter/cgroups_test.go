package filter

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestCgroupFilterParsed(t *testing.T) {
	fc, err := ParseConfigFile([]byte(`
cgroups:
  exclude: ["/system.slice", "/kubepods.slice/pod-a/"]
  include:
    - /system.slice/nginx.service
`), "c.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := &CgroupFilter{Include: []string{"/system.slice/nginx.service"}, Exclude: []string{"/system.slice", "/kubepods.slice/pod-a"}}
	if !reflect.DeepEqual(fc.Cgroups, want) {
		t.Errorf("got %+v, want %+v", fc.Cgroups, want)
	}
	// "/" excluded with includes: only the included subtrees.
	if fc, err := ParseConfigFile([]byte(`cgroups: {exclude: [/], include: [/kubepods.slice]}`), "c.yml"); err != nil ||
		!reflect.DeepEqual(fc.Cgroups, &CgroupFilter{Include: []string{"/kubepods.slice"}, Exclude: []string{"/"}}) {
		t.Errorf("exclude / with an include: got %+v, %v", fc, err)
	}
	for _, empty := range []string{"", "cgroups:", "cgroups: {}", "cgroups: {include: [], exclude: []}"} {
		fc, err := ParseConfigFile([]byte(empty), "c.yml")
		if err != nil || fc.Cgroups != nil {
			t.Errorf("%q: got %+v, %v; want no filter", empty, fc.Cgroups, err)
		}
	}
}

func TestCgroupFilterErrorsNameTheEntry(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`cgroups: [/a]`, `c.yml: cgroups: line 1: want a mapping with keys include and exclude`},
		{`cgroups: {only: [/a]}`, `c.yml: cgroups: line 1: unknown key a string "only" (known keys: include, exclude)`},
		{`cgroups: {exclude: /a}`, `c.yml: cgroups.exclude: line 1: want a list of cgroup paths`},
		{`cgroups: {exclude: [system.slice]}`, `c.yml: cgroups.exclude[0] "system.slice": not absolute`},
		{`cgroups: {exclude: [/sys/fs/cgroup/system.slice]}`, `c.yml: cgroups.exclude[0] "/sys/fs/cgroup/system.slice": a path under the cgroup v2 root, not of its mount`},
		{`cgroups: {exclude: ["/a/../b"]}`, `c.yml: cgroups.exclude[0] "/a/../b": empty, "." or ".." component`},
		{`cgroups: {exclude: ["/a//b"]}`, `c.yml: cgroups.exclude[0] "/a//b": empty, "." or ".." component`},
		{`cgroups: {exclude: ["/"]}`, `c.yml: cgroups.exclude: "/" without includes excludes every socket`},
		{`cgroups: {exclude: [/a], include: [/a/]}`, `c.yml: cgroups.include[0] "/a/": given twice (first as cgroups.exclude[0])`},
		{`cgroups: {exclude: [{a: b}]}`, `c.yml: cgroups.exclude[0]: line 1: want a cgroup path, got a mapping`},
		{"cgroups:\n  exclude: [/a]\n  exclude: [/b]", `c.yml: cgroups.exclude: line 3: key repeated`},
	} {
		_, err := ParseConfigFile([]byte(tc.yaml), "c.yml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	var b strings.Builder
	b.WriteString("cgroups:\n  exclude:\n")
	for i := 0; i <= maxCgroupFilters; i++ {
		b.WriteString("    - /a/" + strconv.Itoa(i) + "\n")
	}
	if _, err := ParseConfigFile([]byte(b.String()), "c.yml"); err == nil || !strings.Contains(err.Error(), "more than the limit of 1024") {
		t.Errorf("1025 paths: got %v, want the limit named", err)
	}
}
