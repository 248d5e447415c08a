package cgroup

import "strings"

// Info is what a cgroup path says about the processes in it. The derived
// fields are "" when the path does not show them, or (from a Resolver) when
// only components below a directory not owned by root show them.
type Info struct {
	// Path is the cgroup's path relative to the cgroup2 mount, starting
	// with "/" ("/" is the root cgroup).
	Path string
	// Unit is the systemd unit, e.g. "nginx.service".
	Unit string
	// ContainerID is a container's id: 64 lowercase hex digits.
	ContainerID string
	// PodUID is a Kubernetes pod's uid, 8-4-4-4-12 lowercase hex digits
	// with dashes, or a static pod's 32 lowercase hex digits.
	PodUID string
}

// Describe derives the labels of the cgroup at path (relative to the
// cgroup2 mount, e.g. "/system.slice/nginx.service"), trusting every
// component of it; the Resolver trusts fewer (DescribeTrusted). Info.Path
// is path unchanged. The path is split at '/' into components; empty
// components (from "//", a leading or a trailing '/') are skipped. The
// components are read down to the first that names a container, and not
// below it: what is inside a container (systemd's units, docker in
// docker) is the container's own, named by whoever is root inside it, who
// must not be able to give it another container's or pod's labels; a
// cgroup inside a container is labelled as its container. Above that,
// each derived field comes from the deepest component of its form, so a
// cgroup nested inside a unit or pod is still labelled with it:
//
//   - Unit: the deepest component ending in ".service" or ".scope"; when
//     there is none, the deepest ending in ".slice". A component counts only
//     when it is a valid systemd unit name: something before the suffix, at
//     most 255 bytes, and only the bytes A-Z a-z 0-9 : _ . \ @ -.
//     "/system.slice/foo.service/payload" gives "foo.service".
//   - ContainerID: the first (shallowest) component naming a container, one of
//     <id> (docker and containerd with the cgroupfs driver),
//     docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope,
//     crio-<id> (cri-o), libpod-<id>.scope or libpod-<id> (podman), where
//     <id> is exactly 64 lowercase hex digits; the value is <id>. Conmon's
//     cgroups (crio-conmon-<id>.scope, libpod-conmon-<id>.scope) are not
//     containers.
//   - PodUID: only below a component that starts with "kubepods"
//     (kubepods, kubepods.slice, kubepods-burstable.slice, ...) or with
//     "kubelet-kubepods" (the same below kubelet's --cgroup-root=/kubelet,
//     as kind sets it): the deepest component pod<uid> (cgroupfs driver),
//     or <k>-pod<uid_>.slice or <k>-<qos>-pod<uid_>.slice with <k>
//     "kubepods" or "kubelet-kubepods" and <qos> burstable or besteffort
//     (systemd driver). <uid> is 8-4-4-4-12 lowercase hex digits with
//     dashes, <uid_> the same with underscores, as systemd reserves '-' in
//     slice names; either may also be 32 lowercase hex digits without
//     separators, the uid kubelet gives a static pod (kube-apiserver,
//     etcd: a hash of its manifest, which its mirror pod in the API shows
//     as the kubernetes.io/config.mirror annotation). The value is a
//     8-4-4-4-12 uid always written with dashes, or the 32 digits as
//     written.
//
// The derived fields are substrings of path, sharing its memory, except a
// PodUID from the systemd form with underscores, the one string Describe
// allocates: the cache stores an Info per cgroup, so it should cost no
// more than the path.
func Describe(path string) Info {
	return DescribeTrusted(path, len(path))
}

// DescribeTrusted is Describe reading only the first trusted components of
// path (empty components not counted): the Resolver's view, as the names
// below a directory not owned by root are chosen by whoever owns it (see
// the package documentation). Info.Path is still the whole path; trusted
// <= 0 derives nothing.
func DescribeTrusted(path string, trusted int) Info {
	info := Info{Path: path}
	var service, slice, pod string
	podUnderscores := false
	// underKubepods is set once a component starts with "kubepods" (or
	// "kubelet-kubepods"): the pod forms only count below one, since
	// "pod<uid>" alone is too common a shape for a name anyone may choose.
	underKubepods := false
	for rest := path; rest != "" && trusted > 0; {
		var c string
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			c, rest = rest[:i], rest[i+1:]
		} else {
			c, rest = rest, ""
		}
		if c == "" {
			continue
		}
		trusted--
		switch unitKind(c) {
		case unitService:
			service = c
		case unitSlice:
			slice = c
		}
		if underKubepods {
			if uid, underscores, ok := podUID(c); ok {
				pod, podUnderscores = uid, underscores
			}
		}
		if isKubepods(c) {
			underKubepods = true
		}
		if id, ok := containerID(c); ok {
			// The first container ends the reading: below it is the
			// container's own (systemd in a container, docker in
			// docker), named by whoever is root inside it.
			info.ContainerID = id
			break
		}
	}
	info.Unit = service
	if info.Unit == "" {
		info.Unit = slice
	}
	info.PodUID = pod
	if podUnderscores {
		info.PodUID = strings.ReplaceAll(pod, "_", "-")
	}
	return info
}

// isKubepods reports whether c marks the top of kubelet's cgroups: its
// "kubepods" (cgroupfs driver) or "kubepods.slice" and the QoS slices below
// (systemd driver), under a --cgroup-root of "/kubelet" prefixed as systemd
// names nested slices ("kubelet-kubepods.slice").
func isKubepods(c string) bool {
	return strings.HasPrefix(c, "kubepods") || strings.HasPrefix(c, "kubelet-kubepods")
}

// The kinds of systemd unit names Describe tells apart.
const (
	unitNone = iota
	unitService
	unitSlice
)

// maxUnitNameBytes is systemd's UNIT_NAME_MAX less the terminating NUL.
const maxUnitNameBytes = 255

// unitKind tells whether c is a valid systemd unit name, and of which kind:
// ".service" and ".scope" (the units processes run in) are unitService,
// ".slice" (the units grouping them) unitSlice.
func unitKind(c string) int {
	if len(c) > maxUnitNameBytes {
		return unitNone
	}
	for i := 0; i < len(c); i++ {
		if !isUnitByte(c[i]) {
			return unitNone
		}
	}
	for _, s := range unitSuffixes {
		if len(c) > len(s.suffix) && strings.HasSuffix(c, s.suffix) {
			return s.kind
		}
	}
	return unitNone
}

// unitSuffixes are the unit types Describe reads, with their kinds.
var unitSuffixes = []struct {
	suffix string
	kind   int
}{{".service", unitService}, {".scope", unitService}, {".slice", unitSlice}}

// isUnitByte reports whether b may appear in a systemd unit name (systemd's
// VALID_CHARS plus '.', '@' and the '\' of its escapes).
func isUnitByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' ||
		b == ':' || b == '_' || b == '.' || b == '\\' || b == '@' || b == '-'
}

// The ways a runtime names a container's cgroup: a prefix, the id, and a
// ".scope" suffix that is required (systemd cgroup driver), forbidden (a
// bare id: cgroupfs driver) or optional (cri-o and podman, whose cgroupfs
// form keeps the prefix).
var containerForms = []struct {
	prefix string
	scope  scopeSuffix
}{
	{"", scopeNever},
	{"docker-", scopeAlways},
	{"cri-containerd-", scopeAlways},
	{"crio-", scopeMaybe},
	{"libpod-", scopeMaybe},
}

type scopeSuffix int

const (
	scopeNever scopeSuffix = iota
	scopeAlways
	scopeMaybe
)

// containerID returns the id of the container the component c names. Conmon
// ("crio-conmon-<id>.scope") falls out: "conmon-<id>" is not an id.
func containerID(c string) (string, bool) {
	for _, f := range containerForms {
		rest, ok := strings.CutPrefix(c, f.prefix)
		if !ok {
			continue
		}
		rest, scoped := strings.CutSuffix(rest, ".scope")
		if scoped && f.scope == scopeNever || !scoped && f.scope == scopeAlways {
			continue
		}
		if isContainerID(rest) {
			return rest, true
		}
	}
	return "", false
}

// isContainerID reports whether s is 64 lowercase hex digits, the form
// every runtime gives ids in (a sha256).
func isContainerID(s string) bool { return isLowerHexOfLen(s, 64) }

// isLowerHexOfLen reports whether s is n lowercase hex digits.
func isLowerHexOfLen(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f'
}

// podUID returns the pod uid in the component c, and whether it is written
// with underscores (systemd driver) instead of dashes (cgroupfs driver).
func podUID(c string) (uid string, underscores, ok bool) {
	if u, found := strings.CutPrefix(c, "pod"); found {
		if isPodUID(u, '-') {
			return u, false, true
		}
		if isStaticPodUID(u) {
			return u, false, true
		}
		return "", false, false
	}
	mid, found := strings.CutSuffix(c, ".slice")
	if !found {
		return "", false, false
	}
	if m, found := strings.CutPrefix(mid, "kubelet-"); found {
		mid = m
	}
	if mid, found = strings.CutPrefix(mid, "kubepods-"); !found {
		return "", false, false
	}
	for _, prefix := range podSlicePrefixes {
		u, found := strings.CutPrefix(mid, prefix)
		if !found {
			continue
		}
		if isPodUID(u, '_') {
			return u, true, true
		}
		if isStaticPodUID(u) {
			return u, false, true
		}
	}
	return "", false, false
}

// podSlicePrefixes are what follows "kubepods-" in a pod's slice name: the
// pod's QoS class (none for Guaranteed pods), then "pod".
var podSlicePrefixes = []string{"pod", "burstable-pod", "besteffort-pod"}

// isPodUID reports whether s is a uid (8-4-4-4-12 lowercase hex digits)
// with its groups separated by sep.
func isPodUID(s string, sep byte) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != sep {
				return false
			}
		default:
			if !isLowerHex(s[i]) {
				return false
			}
		}
	}
	return true
}

// isStaticPodUID reports whether s is the uid kubelet gives a static pod:
// 32 lowercase hex digits (an md5 of its manifest), with no separators in
// either driver's form.
func isStaticPodUID(s string) bool { return isLowerHexOfLen(s, 32) }
