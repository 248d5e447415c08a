package cgroup

import (
	"strings"
	"testing"
)

const (
	cid  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cid2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	uid  = "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"
	uid_ = "1b2c3d4e_aaaa_bbbb_cccc_0123456789ab"
	// static is a static pod's uid: a hash of its manifest.
	static = "7b3e2f4c9a1d0e5f6a7b8c9d0e1f2a3b"
)

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Info // Path is filled in from path
	}{
		// systemd units
		{"/", Info{}},
		{"", Info{}},
		{"/system.slice/nginx.service", Info{Unit: "nginx.service"}},
		{"/system.slice", Info{Unit: "system.slice"}},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope", Info{Unit: "app-foo.scope"}},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice", Info{Unit: "user@1000.service"}},
		{"/system.slice/foo.service/payload", Info{Unit: "foo.service"}},
		{"/kubepods.slice/kubepods-besteffort.slice", Info{Unit: "kubepods-besteffort.slice"}},
		{"/system.slice/system-getty.slice/getty@tty1.service", Info{Unit: "getty@tty1.service"}},
		{`/system.slice/systemd-fsck@dev-disk-by\x2duuid-1234.service`, Info{Unit: `systemd-fsck@dev-disk-by\x2duuid-1234.service`}},
		{"/init.scope", Info{Unit: "init.scope"}},
		{"/a:b_c.scope", Info{Unit: "a:b_c.scope"}},
		{"/system.slice/a.service/b.scope/c", Info{Unit: "b.scope"}},
		{"/a.service/b.slice", Info{Unit: "a.service"}}, // a service beats a deeper slice
		{"/system.slice/nginx.service/", Info{Unit: "nginx.service"}},
		{"//system.slice//nginx.service", Info{Unit: "nginx.service"}},
		{"system.slice/nginx.service", Info{Unit: "nginx.service"}},
		{"//", Info{}},
		{"/.service", Info{}},
		{"/.scope", Info{}},
		{"/system.slice/.service", Info{Unit: "system.slice"}},
		{"/ngi nx.service", Info{}},
		{"/ngi/nx.service", Info{Unit: "nx.service"}},
		{"/nginx.service\x00", Info{}},
		{"/nginx\xff.service", Info{}},
		{"/système.slice/nginx.service", Info{Unit: "nginx.service"}},
		{"/nginx.services", Info{}},
		{"/nginx.Service", Info{}},
		{"/nginx.socket", Info{}},
		{"/" + strings.Repeat("a", 247) + ".service", Info{Unit: strings.Repeat("a", 247) + ".service"}}, // 255 bytes
		{"/" + strings.Repeat("a", 248) + ".service", Info{}},                                            // 256 bytes
		{"/" + strings.Repeat("a", 300) + ".slice/x.service", Info{Unit: "x.service"}},

		// containers
		{"/docker/" + cid, Info{ContainerID: cid}},
		{"/system.slice/docker-" + cid + ".scope", Info{Unit: "docker-" + cid + ".scope", ContainerID: cid}},
		{"/system.slice/docker-" + cid + ".scope/init.scope", Info{Unit: "docker-" + cid + ".scope", ContainerID: cid}}, // inside: the container's
		{"/system.slice/containerd.service/" + cid, Info{Unit: "containerd.service", ContainerID: cid}},
		{"/system.slice/cri-containerd-" + cid + ".scope", Info{Unit: "cri-containerd-" + cid + ".scope", ContainerID: cid}},
		{"/machine.slice/crio-" + cid + ".scope", Info{Unit: "crio-" + cid + ".scope", ContainerID: cid}},
		{"/crio-" + cid, Info{ContainerID: cid}},
		{"/machine.slice/libpod-" + cid + ".scope", Info{Unit: "libpod-" + cid + ".scope", ContainerID: cid}},
		{"/machine.slice/libpod-" + cid + ".scope/container", Info{Unit: "libpod-" + cid + ".scope", ContainerID: cid}},
		{"/libpod_parent/libpod-" + cid, Info{ContainerID: cid}},
		{"/docker/" + cid + "/docker/" + cid2, Info{ContainerID: cid}}, // docker in docker: the outer one
		{"/docker/" + cid2 + "/payload", Info{ContainerID: cid2}},
		// not containers
		{"/machine.slice/crio-conmon-" + cid + ".scope", Info{Unit: "crio-conmon-" + cid + ".scope"}},
		{"/machine.slice/libpod-conmon-" + cid + ".scope", Info{Unit: "libpod-conmon-" + cid + ".scope"}},
		{"/crio-conmon-" + cid, Info{}},
		{"/docker/" + strings.ToUpper(cid), Info{}},
		{"/docker/" + cid[:63], Info{}},
		{"/docker/" + cid + "0", Info{}},
		{"/docker/" + cid[:63] + "g", Info{}},
		{"/" + cid + ".scope", Info{Unit: cid + ".scope"}}, // a bare id has no suffix
		{"/system.slice/docker-" + cid, Info{Unit: "system.slice"}},
		{"/system.slice/docker-" + cid + ".service", Info{Unit: "docker-" + cid + ".service"}},
		{"/system.slice/cri-containerd-" + cid, Info{Unit: "system.slice"}},
		{"/system.slice/docker-" + strings.ToUpper(cid) + ".scope", Info{Unit: "docker-" + strings.ToUpper(cid) + ".scope"}},
		{"/system.slice/containerd-" + cid + ".scope", Info{Unit: "containerd-" + cid + ".scope"}},
		{"/x" + cid, Info{}},

		// Kubernetes, cgroupfs driver
		{"/kubepods/burstable/pod" + uid + "/" + cid, Info{ContainerID: cid, PodUID: uid}},
		{"/kubepods/besteffort/pod" + uid + "/" + cid, Info{ContainerID: cid, PodUID: uid}},
		{"/kubepods/pod" + uid + "/" + cid, Info{ContainerID: cid, PodUID: uid}},
		{"/kubepods/pod" + uid, Info{PodUID: uid}},
		{"/kubepods/pod" + uid + "/crio-" + cid, Info{ContainerID: cid, PodUID: uid}},
		// Kubernetes, systemd driver
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/cri-containerd-" + cid + ".scope",
			Info{Unit: "cri-containerd-" + cid + ".scope", ContainerID: cid, PodUID: uid}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uid_ + ".slice/crio-" + cid + ".scope",
			Info{Unit: "crio-" + cid + ".scope", ContainerID: cid, PodUID: uid}},
		{"/kubepods.slice/kubepods-pod" + uid_ + ".slice/docker-" + cid + ".scope",
			Info{Unit: "docker-" + cid + ".scope", ContainerID: cid, PodUID: uid}},
		{"/kubepods.slice/kubepods-pod" + uid_ + ".slice", Info{Unit: "kubepods-pod" + uid_ + ".slice", PodUID: uid}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/crio-conmon-" + cid + ".scope",
			Info{Unit: "crio-conmon-" + cid + ".scope", PodUID: uid}},
		// kind (Kubernetes in docker): a container holding a node, whose
		// kubelet runs with --cgroup-root=/kubelet. Seen from the host,
		// the node's container (its root names what is inside it); seen
		// from inside the node (its cgroup namespace), the pods.
		{"/system.slice/docker-" + cid2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + uid_ + ".slice",
			Info{Unit: "docker-" + cid2 + ".scope", ContainerID: cid2}},
		{"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uid_ + ".slice/cri-containerd-" + cid + ".scope",
			Info{Unit: "cri-containerd-" + cid + ".scope", ContainerID: cid, PodUID: uid}},
		{"/system.slice/docker-" + cid2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod" + uid_ + ".slice/cri-containerd-" + cid + ".scope",
			Info{Unit: "docker-" + cid2 + ".scope", ContainerID: cid2}},
		{"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + static + ".slice", Info{Unit: "kubelet-kubepods-pod" + static + ".slice", PodUID: static}},
		// static pods (kube-apiserver, etcd): a 32-digit uid
		{"/kubepods/burstable/pod" + static + "/" + cid, Info{ContainerID: cid, PodUID: static}},
		{"/kubepods/pod" + static, Info{PodUID: static}},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + cid + ".scope",
			Info{Unit: "cri-containerd-" + cid + ".scope", ContainerID: cid, PodUID: static}},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + static + ".slice",
			Info{Unit: "kubepods-besteffort-pod" + static + ".slice", PodUID: static}},
		{"/kubepods.slice/kubepods-pod" + static + ".slice", Info{Unit: "kubepods-pod" + static + ".slice", PodUID: static}},
		{"/docker/" + cid2 + "/kubepods/besteffort/pod" + uid + "/" + cid, Info{ContainerID: cid2}},
		// root inside a container names cgroups as it likes: another
		// container's or pod's names below it forge nothing
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/cri-containerd-" + cid + ".scope/kubepods-pod" + strings.ReplaceAll(uid_, "1b2c", "ffff") + ".slice/docker-" + cid2 + ".scope",
			Info{Unit: "cri-containerd-" + cid + ".scope", ContainerID: cid, PodUID: uid}},
		{"/kubepods/pod" + uid + "/pod" + strings.ReplaceAll(uid, "1b2c", "ffff"), Info{PodUID: strings.ReplaceAll(uid, "1b2c", "ffff")}},
		// not pods
		{"/pod" + uid + "/" + cid, Info{ContainerID: cid}},
		{"/system.slice/pod" + uid, Info{Unit: "system.slice"}},
		{"/kubepods-pod" + uid_ + ".slice", Info{Unit: "kubepods-pod" + uid_ + ".slice"}}, // no kubepods ancestor
		{"/kubepods/pod" + strings.ToUpper(uid), Info{}},
		{"/kubepods/pod" + uid_, Info{}},
		{"/kubepods/pod" + uid[:35], Info{}},
		{"/kubepods/pod" + uid + "0", Info{}},
		{"/kubepods/pod" + strings.ToUpper(static), Info{}},
		{"/kubepods/pod" + static[:31], Info{}},
		{"/kubepods/pod" + static + "0", Info{}},
		{"/kubepods/pod" + static[:31] + "g", Info{}},
		{"/kubepods.slice/kubepods-pod" + static[:31] + ".slice", Info{Unit: "kubepods-pod" + static[:31] + ".slice"}},
		{"/kubepods-pod" + static + ".slice", Info{Unit: "kubepods-pod" + static + ".slice"}}, // no kubepods ancestor
		{"/kubelet-kubepods-pod" + uid_ + ".slice", Info{Unit: "kubelet-kubepods-pod" + uid_ + ".slice"}},
		{"/xkubelet-kubepods/pod" + uid, Info{}},
		{"/kubelet.slice/pod" + uid, Info{Unit: "kubelet.slice"}},
		{"/kubelet.slice/kubelet-kubepods.slice/kubelet-pod" + uid_ + ".slice", Info{Unit: "kubelet-pod" + uid_ + ".slice"}},
		{"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + uid + ".slice", Info{Unit: "kubelet-kubepods-pod" + uid + ".slice"}},
		{"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-guaranteed-pod" + uid_ + ".slice", Info{Unit: "kubelet-kubepods-guaranteed-pod" + uid_ + ".slice"}},
		{"/kubepods.slice/kubepods-pod" + uid + ".slice", Info{Unit: "kubepods-pod" + uid + ".slice"}},
		{"/kubepods.slice/kubepods-guaranteed-pod" + uid_ + ".slice", Info{Unit: "kubepods-guaranteed-pod" + uid_ + ".slice"}},
		{"/kubepods.slice/kubepods-burstable-pod" + uid_, Info{Unit: "kubepods.slice"}},
		{"/kubepods.slice/pod" + uid_ + ".slice", Info{Unit: "pod" + uid_ + ".slice"}},
		{"/kubepods.slice/kubepods-burstable-pod" + uid_ + ".scope", Info{Unit: "kubepods-burstable-pod" + uid_ + ".scope"}},
		{"/xkubepods/pod" + uid, Info{}},
	} {
		want := tc.want
		want.Path = tc.path
		if got := Describe(tc.path); got != want {
			t.Errorf("Describe(%q)\n got  %+v\n want %+v", tc.path, got, want)
		}
	}
}

func TestDescribeLongPaths(t *testing.T) {
	deep := strings.Repeat("/a.slice", 100000) + "/docker-" + cid + ".scope"
	if got := Describe(deep); got.Unit != "docker-"+cid+".scope" || got.ContainerID != cid || got.PodUID != "" {
		t.Errorf("deep path: %+v", got.Unit)
	}
	long := "/" + strings.Repeat("x", 1<<20) + ".service/" + strings.Repeat(cid, 1000)
	if got := Describe(long); got.Unit != "" || got.ContainerID != "" || got.PodUID != "" || got.Path != long {
		t.Errorf("long components: unit %d bytes, id %q, pod %q", len(got.Unit), got.ContainerID, got.PodUID)
	}
	slashes := strings.Repeat("/", 1<<20)
	if got := Describe(slashes); got != (Info{Path: slashes}) {
		t.Errorf("slashes: %+v", got.Unit)
	}
}

// sink keeps the compiler from optimising Describe away.
var sink Info

// The cache holds an Info per cgroup: its fields must share the path's
// memory, except a systemd-form pod uid with underscores (one string).
func TestDescribeAllocations(t *testing.T) {
	for path, want := range map[string]float64{
		"/system.slice/nginx.service":                                                       0,
		"/kubepods/burstable/pod" + uid + "/" + cid:                                         0,
		"/system.slice/docker-" + cid + ".scope/init.scope":                                 0,
		"/kubepods.slice/kubepods-pod" + uid_ + ".slice/cri-containerd-" + cid + ".scope":   1,
		"/kubepods.slice/kubepods-pod" + static + ".slice/cri-containerd-" + cid + ".scope": 0,
	} {
		if got := testing.AllocsPerRun(100, func() { sink = Describe(path) }); got != want {
			t.Errorf("Describe(%q): %v allocations, want %v", path, got, want)
		}
	}
}

// checkInfo checks what Describe promises of any input.
func checkInfo(t *testing.T, path string, info Info) {
	t.Helper()
	if info.Path != path {
		t.Fatalf("Describe(%q).Path = %q", path, info.Path)
	}
	if u := info.Unit; u != "" && (!isComponent(path, u) || unitKind(u) == unitNone) {
		t.Fatalf("Describe(%q).Unit = %q: not a unit component", path, u)
	}
	if id := info.ContainerID; id != "" && (!strings.Contains(path, id) || !isContainerID(id)) {
		t.Fatalf("Describe(%q).ContainerID = %q", path, id)
	}
	if p := info.PodUID; p != "" && (!isPodUID(p, '-') && !isStaticPodUID(p) ||
		!strings.Contains(path, "kubepods") ||
		!strings.Contains(path, p) && !strings.Contains(path, strings.ReplaceAll(p, "-", "_"))) {
		t.Fatalf("Describe(%q).PodUID = %q", path, p)
	}
}

func isComponent(path, c string) bool {
	for _, p := range strings.Split(path, "/") {
		if p == c {
			return true
		}
	}
	return false
}

func FuzzDescribe(f *testing.F) {
	for _, s := range []string{
		"/",
		"/system.slice/nginx.service",
		"/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope",
		"/system.slice/docker-" + cid + ".scope/init.scope",
		"/machine.slice/crio-conmon-" + cid + ".scope",
		"/kubepods/burstable/pod" + uid + "/" + cid,
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/cri-containerd-" + cid + ".scope",
		"//a\xff.service/",
		"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uid_ + ".slice/cri-containerd-" + cid + ".scope",
		"/kubepods/pod" + static + "/" + cid,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		full := Describe(path)
		checkInfo(t, path, full)
		// Trusting fewer components derives the same from a prefix.
		for n := 0; n <= 3; n++ {
			got := DescribeTrusted(path, n)
			checkInfo(t, path, got)
			if want := Describe(trustedPrefix(path, n)); got.Unit != want.Unit || got.ContainerID != want.ContainerID || got.PodUID != want.PodUID {
				t.Fatalf("DescribeTrusted(%q, %d) = %+v, want the labels of %+v", path, n, got, want)
			}
		}
	})
}

// trustedPrefix is path up to the end of its n-th non-empty component.
func trustedPrefix(path string, n int) string {
	end := 0
	for i := 0; i < len(path) && n > 0; {
		j := strings.IndexByte(path[i:], '/')
		if j < 0 {
			j = len(path) - i
		}
		if j > 0 {
			n--
			end = i + j
		}
		i += j + 1
	}
	return path[:end]
}

// The Resolver labels a cgroup from the components it trusts only: a user
// naming their own cgroups after a container, a pod or a unit gets none of
// those.
func TestDescribeTrusted(t *testing.T) {
	user := "/user.slice/user-1000.slice/user@1000.service/app.slice/docker-" + cid + ".scope"
	pod := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice/cri-containerd-" + cid + ".scope"
	for _, tc := range []struct {
		path    string
		trusted int
		want    Info // Path is filled in from path
	}{
		{user, 2, Info{Unit: "user-1000.slice"}},
		{user, 3, Info{Unit: "user@1000.service"}},
		{user, 5, Info{Unit: "docker-" + cid + ".scope", ContainerID: cid}},
		{user, 99, Info{Unit: "docker-" + cid + ".scope", ContainerID: cid}},
		{user, 0, Info{}},
		{user, -1, Info{}},
		{"//user.slice//user-1000.slice/x.scope", 2, Info{Unit: "user-1000.slice"}}, // empty components do not count
		{pod, 3, Info{Unit: "kubepods-burstable-pod" + uid_ + ".slice", PodUID: uid}},
		{pod, 2, Info{Unit: "kubepods-burstable.slice"}},
		{"/docker/" + cid, 1, Info{}},
		{"/", 1, Info{}},
	} {
		want := tc.want
		want.Path = tc.path
		if got := DescribeTrusted(tc.path, tc.trusted); got != want {
			t.Errorf("DescribeTrusted(%q, %d)\n got  %+v\n want %+v", tc.path, tc.trusted, got, want)
		}
	}
	if got, want := trustedPrefix("//a/b//c/", 2), "//a/b"; got != want {
		t.Errorf("trustedPrefix = %q, want %q", got, want)
	}
}
