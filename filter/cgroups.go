package filter

import (
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The cgroup filter of the --config.file:
//
//	cgroups:
//	  exclude: [/system.slice/backup.service]   # subtrees not traced
//	  include: [/kubepods.slice]                # with includes, only these
//
// Paths are relative to the cgroup v2 root ("/system.slice", not
// "/sys/fs/cgroup/system.slice"). A socket's cgroup is matched against its
// own path and its ancestors': the deepest listed one decides (so a
// service can be included inside an excluded slice, or the other way
// round); none listed: traced, unless there are includes. The kernel
// applies it where a connection or UDP flow starts (bpf/cgroup.h).

const (
	keyCgroups = "cgroups"
	// maxCgroupFilters is the size of the kernel's table (cgroup_filter).
	maxCgroupFilters = 1024
	// maxCgroupPath is the longest path taken (PATH_MAX).
	maxCgroupPath = 4096
)

// CgroupFilter is the cgroups section of the config file: cleaned paths,
// each starting with "/", in file order.
type CgroupFilter struct {
	Include, Exclude []string
}

// Empty says the filter selects nothing (every socket is traced).
func (f *CgroupFilter) Empty() bool { return f == nil || len(f.Include)+len(f.Exclude) == 0 }

// cgroupFilter decodes and checks the cgroups section.
func (p *configParser) cgroupFilter(n *yaml.Node) *CgroupFilter {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(`%s: line %d: want a mapping with keys include and exclude (lists of cgroup paths, e.g. exclude: ["/system.slice/backup.service"]), got %s`, keyCgroups, n.Line, describe(n))
		return nil
	}
	f := &CgroupFilter{}
	seen := map[string]string{} // path -> "include[0]"
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k == nil || k.Kind != yaml.ScalarNode || (k.Value != "include" && k.Value != "exclude") {
			p.errorf("%s: line %d: unknown key %s (known keys: include, exclude)", keyCgroups, n.Content[i].Line, describe(k))
			continue
		}
		list := &f.Include
		if k.Value == "exclude" {
			list = &f.Exclude
		}
		if *list != nil {
			p.errorf("%s.%s: line %d: key repeated", keyCgroups, k.Value, k.Line)
			continue
		}
		*list = p.cgroupPaths(keyCgroups+"."+k.Value, v, seen)
	}
	if n := len(f.Include) + len(f.Exclude); n > maxCgroupFilters {
		p.errorf("%s: %d paths, more than the limit of %d", keyCgroups, n, maxCgroupFilters)
		return nil
	}
	if slices.Contains(f.Exclude, "/") && len(f.Include) == 0 {
		p.errorf(`%s.exclude: "/" without includes excludes every socket: nothing would be traced`, keyCgroups)
	}
	if f.Empty() {
		return nil
	}
	return f
}

// cgroupPaths decodes one list of cgroup paths; seen names where each path
// was first given, across both lists.
func (p *configParser) cgroupPaths(name string, n *yaml.Node, seen map[string]string) []string {
	if isNull(n) {
		return []string{}
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(`%s: line %d: want a list of cgroup paths (e.g. ["/system.slice/nginx.service"]), got %s`, name, n.Line, describe(n))
		return []string{}
	}
	out := make([]string, 0, len(n.Content))
	for i, e := range n.Content {
		e = resolve(e)
		if e == nil || e.Kind != yaml.ScalarNode || isNull(e) {
			p.errorf("%s[%d]: line %d: want a cgroup path, got %s", name, i, n.Content[i].Line, describe(e))
			continue
		}
		path, why := cleanCgroupPath(strings.TrimSpace(e.Value))
		if why != "" {
			p.errorf("%s[%d] %q: %s (line %d)", name, i, e.Value, why, e.Line)
			continue
		}
		at := name + "[" + strconv.Itoa(i) + "]"
		if first, dup := seen[path]; dup {
			p.errorf("%s %q: given twice (first as %s) (line %d)", at, e.Value, first, e.Line)
			continue
		}
		seen[path] = at
		out = append(out, path)
	}
	return out
}

// cleanCgroupPath checks a cgroup path and drops a trailing "/"; why says
// what is wrong with it.
func cleanCgroupPath(s string) (path, why string) {
	switch {
	case s == "":
		return "", "empty path"
	case len(s) > maxCgroupPath:
		return "", "longer than 4096 bytes"
	case !strings.HasPrefix(s, "/"):
		return "", `not absolute: a path under the cgroup v2 root starts with "/" (e.g. "/system.slice/nginx.service")`
	case strings.HasPrefix(s, "/sys/fs/cgroup"):
		return "", `a path under the cgroup v2 root, not of its mount: "/system.slice", not "/sys/fs/cgroup/system.slice"`
	}
	if s != "/" {
		s = strings.TrimSuffix(s, "/")
	}
	for _, c := range strings.Split(s[1:], "/") {
		switch {
		case s == "/":
		case c == "" || c == "." || c == "..":
			return "", `empty, "." or ".." component`
		case strings.ContainsRune(c, 0):
			return "", "NUL byte"
		}
	}
	return s, ""
}
