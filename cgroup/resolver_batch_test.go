package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// counts returns how many directories r's CreatedAll listed and how many
// children it statted, so far.
func counts(r *Resolver) (listings, childStats uint64) {
	return r.listings.Load(), r.childStats.Load()
}

// A flood of mkdirs in one directory, as one drain hands them over: one
// listing of the directory, a stat of each new child and of no sibling.
// (One listing and stat of every sibling per event, as Created did, is
// 2,000 listings and about 6 million stats here.)
func TestCreatedAllListsEachParentOnce(t *testing.T) {
	const n = 2000
	root := mkTree(t, "/kubepods.slice")
	dir := filepath.Join(root, "kubepods.slice")
	for i := range n {
		if err := os.Mkdir(filepath.Join(dir, fmt.Sprintf("old-%04d.scope", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	parent := ino(t, dir)
	evs := make([]CreatedEvent, 0, n)
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("new-%04d.scope", i))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, CreatedEvent{ID: ino(t, p), Parent: parent})
	}
	clock.Advance(time.Hour) // a walk would be allowed: CreatedAll must not need one
	began := time.Now()
	r.CreatedAll(evs)
	t.Logf("%d events among %d siblings: %v", n, 2*n, time.Since(began))
	if l, s := counts(r); l != 1 || s != n {
		t.Errorf("%d listings and %d children statted, want 1 and %d", l, s, n)
	}
	for i, ev := range evs {
		want := fmt.Sprintf("/kubepods.slice/new-%04d.scope", i)
		if info, ok := r.Peek(ev.ID); !ok || info != Describe(want) {
			t.Fatalf("event %d: Peek = %+v, %v, want %+v", i, info, ok, Describe(want))
		}
	}
	wantStats(t, r, Stats{Entries: 2 + 2*n, Scans: 1})
	// Again: all named already, nothing to read.
	r.CreatedAll(evs)
	if l, s := counts(r); l != 1 || s != n {
		t.Errorf("events of named cgroups: %d listings and %d children statted", l, s)
	}
}

// A pod's slice, its container's scope and a cgroup in it, made at once:
// the parents are made by events of the same batch, in whatever order the
// batch lists them; no walk.
func TestCreatedAllNested(t *testing.T) {
	root := mkTree(t, "/kubepods.slice/kubepods-burstable.slice")
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	qos := ino(t, filepath.Join(root, "kubepods.slice/kubepods-burstable.slice"))
	podPath := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid_ + ".slice"
	ctrPath := podPath + "/cri-containerd-" + cid + ".scope"
	pod := mkdir(t, root, podPath)
	ctr := mkdir(t, root, ctrPath)
	sub := mkdir(t, root, ctrPath+"/sub")
	clock.Advance(time.Hour)
	r.CreatedAll([]CreatedEvent{{sub, ctr}, {ctr, pod}, {pod, qos}, {0, pod}, {sub, ctr}})
	if l, s := counts(r); l != 3 || s != 3 {
		t.Errorf("%d listings and %d children statted, want 3 and 3", l, s)
	}
	for id, p := range map[uint64]string{pod: podPath, ctr: ctrPath, sub: ctrPath + "/sub"} {
		if info, ok := r.Peek(id); !ok || info != Describe(p) {
			t.Errorf("Peek(%s) = %+v, %v", p, info, ok)
		}
	}
	if info, _ := r.Peek(sub); info.ContainerID != cid || info.PodUID != uid {
		t.Errorf("nested cgroup: %+v", info)
	}
	wantStats(t, r, Stats{Entries: 6, Scans: 1})
}

// A parent not known (its own event lost): one walk for the whole batch,
// in the background and subject to MinRescan; the known parents are
// listed at once.
func TestCreatedAllUnknownParent(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now}) // MinRescan 10s
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	sys := ino(t, filepath.Join(root, "system.slice"))
	a := mkdir(t, root, "/system.slice/a.service")
	y := mkdir(t, root, "/x.slice/y.scope")
	clock.Advance(10 * time.Second)
	r.CreatedAll([]CreatedEvent{{a, sys}, {y, ino(t, filepath.Join(root, "x.slice"))}})
	if l, _ := counts(r); l != 1 {
		t.Errorf("%d listings besides the walk, want the known parent's", l)
	}
	if info, ok := r.Peek(a); !ok || info.Path != "/system.slice/a.service" {
		t.Errorf("known parent, before the walk: Peek = %+v, %v", info, ok)
	}
	r.waitBackground()
	for id, p := range map[uint64]string{a: "/system.slice/a.service", y: "/x.slice/y.scope"} {
		if info, ok := r.Peek(id); !ok || info.Path != p {
			t.Errorf("Peek(%s) = %+v, %v", p, info, ok)
		}
	}
	wantStats(t, r, Stats{Entries: 18, Scans: 2})

	clock.Advance(9 * time.Second)
	b := mkdir(t, root, "/system.slice/b.service")
	z := mkdir(t, root, "/q.slice/z.scope")
	r.CreatedAll([]CreatedEvent{{z, ino(t, filepath.Join(root, "q.slice"))}, {b, sys}})
	r.waitBackground()
	if l, _ := counts(r); l != 2 {
		t.Errorf("within MinRescan: %d listings, want 1 more", l-1)
	}
	if info, ok := r.Peek(b); !ok || info.Path != "/system.slice/b.service" {
		t.Errorf("within MinRescan, known parent: Peek = %+v, %v", info, ok)
	}
	if info, ok := r.Peek(z); ok {
		t.Errorf("within MinRescan, unknown parent: Peek = %+v", info)
	}
	wantStats(t, r, Stats{Entries: 19, Scans: 2})
}

// More than 64 parents: the first 64 are listed at once, and one walk,
// in the background and subject to MinRescan, names the rest.
func TestCreatedAllManyParents(t *testing.T) {
	const parents = maxListedParents + 1
	var paths []string
	for i := range parents {
		paths = append(paths, fmt.Sprintf("/p%02d.slice", i))
	}
	root := mkTree(t, paths...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, MinRescan: time.Minute})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	batch := func(name string) []CreatedEvent {
		var evs []CreatedEvent
		for _, p := range paths {
			evs = append(evs, CreatedEvent{mkdir(t, root, p+"/"+name), ino(t, filepath.Join(root, p))})
		}
		return evs
	}
	clock.Advance(time.Minute)
	evs := batch("a.scope")
	r.CreatedAll(evs)
	r.waitBackground()
	if l, _ := counts(r); l != maxListedParents {
		t.Errorf("%d listings besides the walk, want %d", l, maxListedParents)
	}
	for _, ev := range evs {
		if _, ok := r.Peek(ev.ID); !ok {
			t.Errorf("cgroup %d not named by the walk", ev.ID)
		}
	}
	wantStats(t, r, Stats{Entries: 1 + 2*parents, Scans: 2})

	evs = batch("b.scope")
	r.CreatedAll(evs)
	r.waitBackground()
	if l, _ := counts(r); l != 2*maxListedParents {
		t.Errorf("within MinRescan: %d listings, want %d more", l-maxListedParents, maxListedParents)
	}
	for i, ev := range evs {
		if _, ok := r.Peek(ev.ID); ok != (i < maxListedParents) {
			t.Errorf("event %d: named %v", i, ok)
		}
	}
	wantStats(t, r, Stats{Entries: 1 + 2*parents + maxListedParents, Scans: 2})
}

func TestScanIfDue(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, MinRescan: time.Minute})
	if walked, err := r.ScanIfDue(); !walked || err != nil {
		t.Fatalf("first ScanIfDue: %v, %v", walked, err)
	}
	clock.Advance(time.Minute - 1)
	if walked, err := r.ScanIfDue(); walked || err != nil {
		t.Errorf("ScanIfDue within MinRescan: %v, %v", walked, err)
	}
	wantStats(t, r, Stats{Entries: 15, Scans: 1})
	clock.Advance(1)
	id := mkdir(t, root, "/late.scope")
	if walked, err := r.ScanIfDue(); !walked || err != nil {
		t.Errorf("ScanIfDue after MinRescan: %v, %v", walked, err)
	}
	if info, ok := r.Peek(id); !ok || info.Path != "/late.scope" {
		t.Errorf("Peek(late) = %+v, %v", info, ok)
	}
	wantStats(t, r, Stats{Entries: 16, Scans: 2})
	bad := newResolver(Config{Root: filepath.Join(root, "missing")})
	if walked, err := bad.ScanIfDue(); !walked || err == nil {
		t.Errorf("ScanIfDue of a missing root: %v, %v", walked, err)
	}
}

// Peek neither walks nor counts a miss.
func TestPeek(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, Retention: time.Minute})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	id := ino(t, filepath.Join(root, "init.scope"))
	late := mkdir(t, root, "/late.scope")
	clock.Advance(time.Hour)
	if info, ok := r.Peek(id); !ok || info != Describe("/init.scope") {
		t.Errorf("Peek(known) = %+v, %v", info, ok)
	}
	for _, unknown := range []uint64{late, 0, 1 << 62} {
		if info, ok := r.Peek(unknown); ok {
			t.Errorf("Peek(%d) = %+v", unknown, info)
		}
	}
	r.Removed(id)
	clock.Advance(time.Minute - 1)
	if _, ok := r.Peek(id); !ok {
		t.Error("Peek(removed) during retention: not found")
	}
	clock.Advance(1)
	if _, ok := r.Peek(id); ok {
		t.Error("Peek(removed) after retention: found")
	}
	wantStats(t, r, Stats{Entries: 14, Scans: 1})
}

// MaxBytes bounds the paths held as MaxEntries bounds their number.
func TestMaxBytes(t *testing.T) {
	var paths []string
	for i := range 5 {
		paths = append(paths, fmt.Sprintf("/d%d.slice", i)) // 9 bytes
	}
	root := mkTree(t, paths...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, MaxBytes: 1 + 2*9, MinRescan: time.Hour})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, r, Stats{Entries: 3, Scans: 1, Dropped: 3})
	if s := r.Stats(); s.Bytes != 19 {
		t.Errorf("Bytes = %d, want 19", s.Bytes)
	}
	rootID := ino(t, root)
	var a uint64 // a child held
	for id := range held(r) {
		if id != rootID {
			a = id
			break
		}
	}
	r.Removed(a)
	// Too long even with a evicted: a stays.
	long := mkdir(t, root, "/long-enough.slice")
	r.Created(long, rootID)
	if _, ok := r.Peek(long); ok {
		t.Error("added beyond MaxBytes")
	}
	if _, ok := r.Peek(a); !ok {
		t.Error("a removed entry was evicted for nothing")
	}
	wantStats(t, r, Stats{Entries: 3, Scans: 1, Dropped: 4})
	// Short enough with a evicted.
	short := mkdir(t, root, "/s.scope")
	r.Created(short, rootID)
	if info, ok := r.Peek(short); !ok || info.Path != "/s.scope" {
		t.Errorf("Peek(short) = %+v, %v", info, ok)
	}
	if _, ok := r.Peek(a); ok {
		t.Error("the removed entry was not evicted")
	}
	wantStats(t, r, Stats{Entries: 3, Scans: 1, Dropped: 4})
}

// A walk of a tree the cache names already allocates nothing per cgroup,
// and leaves the cached paths as they are: it holds no second copy of
// them.
func TestRescanKeepsPaths(t *testing.T) {
	paths := append([]string(nil), testTree...)
	for i := range 500 {
		paths = append(paths, fmt.Sprintf("/kubepods/burstable/pod%s/%064d", uid, i))
	}
	root := mkTree(t, paths...)
	r := newResolver(Config{Root: root})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	before := map[uint64]*byte{}
	r.mu.Lock()
	for id, e := range r.entries {
		before[id] = unsafe.StringData(e.info.Path)
	}
	r.mu.Unlock()
	allocs := testing.AllocsPerRun(5, func() {
		if err := r.Scan(); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("a walk of %d known cgroups: %v allocations", len(before), allocs)
	if allocs > 50 {
		t.Errorf("a walk of %d known cgroups: %v allocations", len(before), allocs)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, e := range r.entries {
		if p, ok := before[id]; !ok || p != unsafe.StringData(e.info.Path) {
			t.Fatalf("cgroup %s: path replaced by a walk", e.info.Path)
		}
	}
	if len(r.entries) != len(before) {
		t.Errorf("%d entries after, %d before", len(r.entries), len(before))
	}
}

// requireRoot skips a test that must make directories owned by others,
// unless it runs in CI, which runs as root: there, not being root fails.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test chowns directories: run it as root")
	}
	t.Skip("this test chowns directories: run it as root to run it")
}

// The labels come only from the directories owned by root: a user's names
// below their delegated user@UID.service forge nothing.
func TestTrustedPrefix(t *testing.T) {
	requireRoot(t)
	const user = "/user.slice/user-1000.slice/user@1000.service"
	forged := user + "/app.slice/docker-" + cid + ".scope"
	pod := "/kubepods.slice/kubepods-pod" + uid_ + ".slice/cri-containerd-" + cid2 + ".scope"
	root := mkTree(t, forged, pod)
	chown := func(p string, uid int) {
		t.Helper()
		if err := os.Lchown(filepath.Join(root, p), uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	// As systemd does: user@1000.service is the user's; below it stays
	// root's here, and is still not trusted, its parent not being.
	chown(user, 1000)
	clock := newFakeClock()
	r := NewResolver(Config{Root: root, Now: clock.Now}) // trusting root only
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	peek := func(p string) Info {
		t.Helper()
		info, ok := r.Peek(ino(t, filepath.Join(root, p)))
		if !ok {
			t.Fatalf("%s not named", p)
		}
		return info
	}
	for p, want := range map[string]Info{
		forged:                        {Path: forged, Unit: "user-1000.slice"},
		user:                          {Path: user, Unit: "user-1000.slice"},
		"/user.slice/user-1000.slice": {Path: "/user.slice/user-1000.slice", Unit: "user-1000.slice"},
		pod:                           Describe(pod),
	} {
		if got := peek(p); got != want {
			t.Errorf("walk: %s\n got  %+v\n want %+v", p, got, want)
		}
	}

	// Made later, named from their events.
	sys := mkdir(t, root, "/system.slice")
	r.Created(sys, ino(t, root))
	below := mkdir(t, root, forged+"/payload")
	users := mkdir(t, root, "/system.slice/docker-"+cid2+".scope")
	chown("/system.slice/docker-"+cid2+".scope", 1000)
	roots := mkdir(t, root, "/system.slice/nginx.service")
	r.CreatedAll([]CreatedEvent{{below, ino(t, filepath.Join(root, forged))}, {users, sys}, {roots, sys}})
	for p, want := range map[string]Info{
		forged + "/payload":                       {Path: forged + "/payload", Unit: "user-1000.slice"},
		"/system.slice/docker-" + cid2 + ".scope": {Path: "/system.slice/docker-" + cid2 + ".scope", Unit: "system.slice"},
		"/system.slice/nginx.service":             Describe("/system.slice/nginx.service"),
	} {
		if got := peek(p); got != want {
			t.Errorf("CreatedAll: %s\n got  %+v\n want %+v", p, got, want)
		}
	}

	// A walk sees an owner change, and keeps the path it has.
	const nginx = "/system.slice/nginx.service"
	data := unsafe.StringData(peek(nginx).Path)
	chown(nginx, 1000)
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	if got := peek(nginx); got.Unit != "system.slice" || unsafe.StringData(got.Path) != data {
		t.Errorf("chowned to a user: %+v (path copied: %v)", got, unsafe.StringData(got.Path) != data)
	}
	chown(nginx, 0)
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	if got := peek(nginx); got != Describe(nginx) || unsafe.StringData(got.Path) != data {
		t.Errorf("chowned back to root: %+v", got)
	}
}

// A user's cgroups (below a directory not owned by root) hold at most
// MaxUntrusted entries: a user making them by the thousand cannot crowd
// the system's units, containers and pods out of the names.
func TestUntrustedShare(t *testing.T) {
	requireRoot(t)
	const user = "/user.slice/user-1000.slice/user@1000.service"
	var paths []string
	for i := range 10 {
		paths = append(paths, fmt.Sprintf("%s/u%d.scope", user, i))
	}
	paths = append(paths, "/system.slice/a.service", "/system.slice/b.service")
	root := mkTree(t, paths...)
	for _, p := range append([]string{user}, paths[:10]...) {
		if err := os.Lchown(filepath.Join(root, p), 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	clock := newFakeClock()
	r := NewResolver(Config{Root: root, Now: clock.Now, MaxEntries: 40, MaxUntrusted: 4, Retention: time.Minute})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	// The root, user.slice, user-1000.slice, system.slice and its two;
	// and 4 of the user's 11 (user@1000.service and its 10).
	wantStats(t, r, Stats{Entries: 10, Scans: 1, Dropped: 7, Untrusted: 4})
	sys := ino(t, filepath.Join(root, "system.slice"))
	svc := mkdir(t, root, "/system.slice/c.service")
	r.Created(svc, sys)
	if _, ok := r.Peek(svc); !ok {
		t.Errorf("root's new cgroup not named beside a full share of the user's")
	}
	var mine []uint64
	for id, info := range held(r) {
		if strings.HasPrefix(info.Path, user+"/") {
			mine = append(mine, id)
		}
	}
	u := mkdir(t, root, user+"/new.scope")
	if err := os.Lchown(filepath.Join(root, user, "new.scope"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	r.Created(u, ino(t, filepath.Join(root, user)))
	if _, ok := r.Peek(u); ok {
		t.Errorf("the user's cgroup named past their share")
	}
	wantStats(t, r, Stats{Entries: 11, Scans: 1, Dropped: 8, Untrusted: 4})
	// Once one of theirs is removed, it makes room (evicted before its
	// retention is over, as the cache's own are when it is full).
	r.Removed(mine[0])
	r.Created(u, ino(t, filepath.Join(root, user)))
	if _, ok := r.Peek(u); !ok {
		t.Errorf("the user's cgroup not named with a removed one in their share")
	}
	if _, ok := r.Peek(mine[0]); ok {
		t.Errorf("the removed one not evicted for it")
	}
	wantStats(t, r, Stats{Entries: 11, Scans: 1, Dropped: 8, Untrusted: 4})
}

// The share bounds the bytes of the user's paths too (MaxBytes/4): long
// names do not fill the cache's bytes either.
func TestUntrustedShareBytes(t *testing.T) {
	requireRoot(t)
	const user = "/user.slice/user-1000.slice/user@1000.service"
	long := strings.Repeat("x", 200)
	var paths []string
	for i := range 10 {
		paths = append(paths, fmt.Sprintf("%s/%d%s.scope", user, i, long))
	}
	root := mkTree(t, append(paths, "/system.slice")...)
	for _, p := range append([]string{user}, paths...) {
		if err := os.Lchown(filepath.Join(root, p), 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	r := NewResolver(Config{Root: root, MaxBytes: 4000}) // the share: 1,000 bytes
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	s := r.Stats()
	// user@1000.service (46 bytes) and 3 of 254: 808; a fourth is 1,062.
	if s.Untrusted != 4 || s.Dropped != 7 || s.Bytes > 4000 {
		t.Errorf("%+v: want 4 of the user's held, 7 dropped", s)
	}
	sys := mkdir(t, root, "/system.slice/"+long+".service")
	r.Created(sys, ino(t, filepath.Join(root, "system.slice")))
	if _, ok := r.Peek(sys); !ok {
		t.Errorf("root's long cgroup not named beside the user's full share (%+v)", r.Stats())
	}
}
