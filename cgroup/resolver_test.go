package cgroup

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mkTree makes a directory standing in for the cgroup2 mount, with the
// directories paths (relative, starting with "/") and a control file in
// each, as a cgroup has.
func mkTree(t *testing.T, paths ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range append([]string{"/"}, paths...) {
		mkdir(t, root, p)
	}
	return root
}

// mkdir makes the directory root+p (and its parents) and returns its inode.
func mkdir(t *testing.T, root, p string) uint64 {
	t.Helper()
	dir := filepath.Join(root, p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return ino(t, dir)
}

func ino(t testing.TB, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// newResolver is NewResolver trusting the directories of the user the
// tests run as: mkTree's are theirs, and only root can make root's.
func newResolver(cfg Config) *Resolver {
	r := NewResolver(cfg)
	r.owner = uint32(os.Geteuid())
	return r
}

// held returns the cache's entries by id.
func held(r *Resolver) map[uint64]Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[uint64]Info{}
	for id, e := range r.entries {
		m[id] = e.info
	}
	return m
}

// wantStats checks r's Stats, Bytes against the paths held.
func wantStats(t *testing.T, r *Resolver, want Stats) {
	t.Helper()
	got := r.Stats()
	want.Bytes = 0
	for _, info := range held(r) {
		want.Bytes += len(info.Path)
	}
	if got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

var testTree = []string{
	"/init.scope",
	"/system.slice/nginx.service",
	"/system.slice/docker-" + cid + ".scope/init.scope",
	"/kubepods/burstable/pod" + uid + "/" + cid2,
	"/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope",
}

// allDirs lists the directories of testTree with their ancestors, "/"
// included.
func allDirs(paths []string) []string {
	seen := map[string]bool{"/": true}
	out := []string{"/"}
	for _, p := range paths {
		for i := 1; i <= len(p); i++ {
			if i == len(p) || p[i] == '/' {
				if d := p[:i]; !seen[d] {
					seen[d] = true
					out = append(out, d)
				}
			}
		}
	}
	return out
}

func TestScan(t *testing.T) {
	root := mkTree(t, testTree...)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "system.slice", "link")); err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	dirs := allDirs(testTree)
	if len(dirs) != 15 {
		t.Fatalf("test tree has %d directories: %q", len(dirs), dirs)
	}
	for _, d := range dirs {
		id := ino(t, filepath.Join(root, d))
		if got, ok := r.Lookup(id); !ok || got != Describe(d) {
			t.Errorf("Lookup(%d) (%s) = %+v, %v, want %+v", id, d, got, ok, Describe(d))
		}
	}
	if info, ok := r.Lookup(ino(t, filepath.Join(root, "system.slice/docker-"+cid+".scope/init.scope"))); info.ContainerID != cid || info.Unit != "docker-"+cid+".scope" || !ok {
		t.Errorf("container's init.scope: %+v", info)
	}
	if info, ok := r.Lookup(ino(t, root)); info.Path != "/" || !ok {
		t.Errorf("root: %+v %v", info, ok)
	}
	// The symbolic link is not followed.
	if info, ok := r.Lookup(ino(t, outside)); ok {
		t.Errorf("symlink target found: %+v", info)
	}
	wantStats(t, r, Stats{Entries: 15, Scans: 1, Misses: 1})
}

func TestScanRootError(t *testing.T) {
	root := filepath.Join(t.TempDir(), "missing")
	r := newResolver(Config{Root: root})
	if err := r.Scan(); err == nil || !strings.Contains(err.Error(), root) {
		t.Errorf("Scan of a missing root: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := newResolver(Config{Root: file}).Scan(); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("Scan of a file: %v", err)
	}
	if _, ok := r.Lookup(1); ok {
		t.Error("found an id without a root")
	}
}

// A walk that found everything takes what it did not find as removed (its
// rmdir event was lost): named for Retention, then dropped.
func TestScanRemovesVanished(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, Retention: time.Minute})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	gone := ino(t, filepath.Join(root, "init.scope"))
	if err := os.RemoveAll(filepath.Join(root, "init.scope")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Second)
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	if info, ok := r.Lookup(gone); !ok || info.Path != "/init.scope" {
		t.Errorf("vanished cgroup not named during retention: %+v %v", info, ok)
	}
	clock.Advance(time.Minute)
	if info, ok := r.Lookup(gone); ok {
		t.Errorf("vanished cgroup named after retention: %+v", info)
	}
	wantStats(t, r, Stats{Entries: 14, Scans: 3, Misses: 1})
}

func TestCreatedKnownParent(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	parent := ino(t, filepath.Join(root, "system.slice"))
	// Siblings before and after it, so the listing has to look for it.
	for i := range 10 {
		mkdir(t, root, fmt.Sprintf("/system.slice/sibling%d.service", i))
	}
	id := mkdir(t, root, "/system.slice/new.service")
	clock.Advance(time.Hour) // a walk would be allowed: Created must not need one
	r.Created(id, parent)
	if s := r.Stats(); s.Scans != 1 || s.Entries != 16 {
		t.Errorf("Created under a known parent: %+v", s)
	}
	if info, ok := r.Lookup(id); !ok || info != Describe("/system.slice/new.service") {
		t.Errorf("Lookup(new) = %+v, %v", info, ok)
	}
	// Under the root, and nested under the one just added.
	top := mkdir(t, root, "/top.slice")
	r.Created(top, ino(t, root))
	nested := mkdir(t, root, "/system.slice/new.service/payload")
	r.Created(nested, id)
	if info, ok := r.Lookup(nested); !ok || info.Path != "/system.slice/new.service/payload" || info.Unit != "new.service" {
		t.Errorf("Lookup(nested) = %+v, %v", info, ok)
	}
	if info, ok := r.Lookup(top); !ok || info.Path != "/top.slice" {
		t.Errorf("Lookup(top) = %+v, %v", info, ok)
	}
	// A cgroup removed before its mkdir event is read is not added.
	gone := mkdir(t, root, "/system.slice/gone.service")
	if err := os.RemoveAll(filepath.Join(root, "system.slice/gone.service")); err != nil {
		t.Fatal(err)
	}
	r.Created(gone, parent)
	r.Created(0, parent)
	wantStats(t, r, Stats{Entries: 18, Scans: 1})
}

func TestCreatedUnknownParent(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, MinRescan: 10 * time.Second})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	mkdir(t, root, "/a.slice/b.slice")
	parent, id := ino(t, filepath.Join(root, "a.slice")), ino(t, filepath.Join(root, "a.slice/b.slice"))
	r.Created(id, parent) // the parent's own event was lost
	r.waitBackground()
	if s := r.Stats(); s.Scans != 2 || s.Entries != 17 {
		t.Errorf("Created under an unknown parent: %+v", s)
	}
	if info, ok := r.Lookup(id); !ok || info.Path != "/a.slice/b.slice" || info.Unit != "b.slice" {
		t.Errorf("Lookup = %+v, %v", info, ok)
	}
	// Within MinRescan of that walk, no other.
	clock.Advance(9 * time.Second)
	mkdir(t, root, "/c.slice/d.slice")
	r.Created(ino(t, filepath.Join(root, "c.slice/d.slice")), ino(t, filepath.Join(root, "c.slice")))
	if s := r.Stats(); s.Scans != 2 || s.Entries != 17 {
		t.Errorf("Created within MinRescan: %+v", s)
	}
}

func TestRemovedRetention(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, Retention: 10 * time.Minute})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "system.slice/nginx.service")
	id := ino(t, dir)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	r.Removed(id)
	r.Removed(id)      // twice: the first removal counts
	r.Removed(1 << 62) // unknown: nothing to do
	clock.Advance(5 * time.Minute)
	r.Removed(id)
	for _, d := range []time.Duration{0, 5*time.Minute - 1} {
		clock.Advance(d)
		if info, ok := r.Lookup(id); !ok || info.Unit != "nginx.service" {
			t.Fatalf("%v after Removed: Lookup = %+v, %v", d, info, ok)
		}
	}
	wantStats(t, r, Stats{Entries: 15, Scans: 1})
	clock.Advance(1)
	if s := r.Stats(); s.Entries != 14 {
		t.Errorf("Retention over: %+v", s)
	}
	if info, ok := r.Lookup(id); ok {
		t.Errorf("Retention over: Lookup = %+v", info)
	}
	wantStats(t, r, Stats{Entries: 14, Scans: 2, Misses: 1})
}

func TestLookupRescanRate(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, MinRescan: time.Minute})
	// The first miss walks, in the background (the caller does not wait):
	// the cache starts empty.
	rootID := ino(t, root)
	if info, ok := r.Lookup(rootID); ok {
		t.Fatalf("Lookup(root) = %+v before any walk", info)
	}
	r.waitBackground()
	if info, ok := r.Lookup(rootID); !ok || info.Path != "/" {
		t.Fatalf("Lookup(root) = %+v, %v after the walk", info, ok)
	}
	wantStats(t, r, Stats{Entries: 15, Scans: 1, Misses: 1})
	const unknown = 1 << 62
	for range 3 {
		r.Lookup(unknown)
	}
	wantStats(t, r, Stats{Entries: 15, Scans: 1, Misses: 4})
	clock.Advance(time.Minute - 1)
	r.Lookup(unknown)
	wantStats(t, r, Stats{Entries: 15, Scans: 1, Misses: 5})
	clock.Advance(1)
	r.Lookup(unknown)
	r.Lookup(unknown)
	r.waitBackground()
	wantStats(t, r, Stats{Entries: 15, Scans: 2, Misses: 7})

	// A new cgroup missed (its event lost) is found by the next walk.
	id := mkdir(t, root, "/late.scope")
	if _, ok := r.Lookup(id); ok {
		t.Error("found within MinRescan")
	}
	clock.Advance(time.Minute)
	if _, ok := r.Lookup(id); ok {
		t.Error("found before the walk it started")
	}
	r.waitBackground()
	if info, ok := r.Lookup(id); !ok || info.Unit != "late.scope" {
		t.Errorf("Lookup(late) = %+v, %v", info, ok)
	}
	wantStats(t, r, Stats{Entries: 16, Scans: 3, Misses: 9})

	// Id 0 is no cgroup: a miss without a walk.
	clock.Advance(time.Hour)
	if _, ok := r.Lookup(0); ok {
		t.Error("Lookup(0) found")
	}
	r.waitBackground()
	wantStats(t, r, Stats{Entries: 16, Scans: 3, Misses: 10})
	// An explicit Scan resets the rate.
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	r.Lookup(unknown)
	r.waitBackground()
	wantStats(t, r, Stats{Entries: 16, Scans: 4, Misses: 11})
	// RescanDue says what ScanIfDue would do, without walking.
	if r.RescanDue() {
		t.Error("RescanDue right after a walk")
	}
	clock.Advance(time.Minute)
	if !r.RescanDue() {
		t.Error("not RescanDue MinRescan after a walk")
	}
	if walked, err := r.ScanIfDue(); !walked || err != nil {
		t.Errorf("ScanIfDue = %v, %v; want a walk", walked, err)
	}
	wantStats(t, r, Stats{Entries: 16, Scans: 5, Misses: 11})
}

func TestBound(t *testing.T) {
	var paths []string
	for i := range 9 {
		paths = append(paths, fmt.Sprintf("/d%d.slice", i))
	}
	root := mkTree(t, paths...) // 10 directories, the root included
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, MaxEntries: 3, MinRescan: time.Hour})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	wantStats(t, r, Stats{Entries: 3, Scans: 1, Dropped: 7})
	rootID := ino(t, root)
	h := held(r)
	if _, ok := h[rootID]; !ok {
		t.Fatalf("root not held: %v", h)
	}
	var a, b uint64 // the two children held
	for id := range h {
		if id == rootID {
			continue
		}
		if a == 0 {
			a = id
		} else {
			b = id
		}
	}
	// Removed entries make room, the oldest removal first.
	r.Removed(b)
	clock.Advance(time.Second)
	r.Removed(a)
	n1 := mkdir(t, root, "/new1.scope")
	r.Created(n1, rootID)
	if h := held(r); len(h) != 3 || h[n1].Path != "/new1.scope" || h[a].Path == "" || h[b].Path != "" {
		t.Errorf("after the first eviction: %v", h)
	}
	n2 := mkdir(t, root, "/new2.scope")
	r.Created(n2, rootID)
	if h := held(r); len(h) != 3 || h[n1].Path == "" || h[n2].Path == "" || h[a].Path != "" {
		t.Errorf("after the second eviction: %v", h)
	}
	wantStats(t, r, Stats{Entries: 3, Scans: 1, Dropped: 7})
	// Full of cgroups not removed: a new one is dropped.
	n3 := mkdir(t, root, "/new3.scope")
	r.Created(n3, rootID)
	if _, ok := r.Lookup(n3); ok {
		t.Error("added to a full cache")
	}
	wantStats(t, r, Stats{Entries: 3, Scans: 1, Dropped: 8, Misses: 1})
	// A walk of the 13 directories still holds 3: it keeps the first 3 it
	// finds (counting the other 10), and those not held already are
	// dropped, as the cache is full of cgroups not removed.
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); s.Entries != 3 || s.Dropped < 8+10 {
		t.Errorf("second walk: %+v", s)
	}
}

func TestDepthLimit(t *testing.T) {
	deep := strings.Repeat("/d", maxWalkDepth+5)
	root := mkTree(t, deep)
	r := newResolver(Config{Root: root})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	// The root, 64 levels, and the 65th counted, not read further.
	wantStats(t, r, Stats{Entries: 1 + maxWalkDepth, Scans: 1, Dropped: 1})
	last := deep[:2*maxWalkDepth]
	if info, ok := r.Lookup(ino(t, filepath.Join(root, last))); !ok || info.Path != last {
		t.Errorf("deepest held: %+v %v", info, ok)
	}
	// Created below the limit is dropped too.
	r.Created(ino(t, filepath.Join(root, last, "d")), ino(t, filepath.Join(root, last)))
	wantStats(t, r, Stats{Entries: 1 + maxWalkDepth, Scans: 1, Dropped: 2})
}

// A directory past the depth limit hides nothing the names hold (they
// never hold one that deep): a walk that met one still finds the cgroups
// removed meanwhile (a user nesting deep must not keep every lost rmdir's
// cgroup named, and held, for ever).
func TestDepthLimitStillFindsRemoved(t *testing.T) {
	root := mkTree(t, strings.Repeat("/d", maxWalkDepth+1), "/gone.scope")
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now, Retention: time.Minute})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	gone := ino(t, filepath.Join(root, "gone.scope"))
	if err := os.RemoveAll(filepath.Join(root, "gone.scope")); err != nil {
		t.Fatal(err)
	}
	// Its rmdir event lost: the next walk must find it gone.
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	if info, ok := r.Peek(gone); ok {
		t.Errorf("removed cgroup still named past its retention: %+v", info)
	}
	wantStats(t, r, Stats{Entries: 1 + maxWalkDepth, Scans: 2, Dropped: 2})
}

func TestID(t *testing.T) {
	root := mkTree(t, testTree...)
	if err := os.Symlink(filepath.Join(root, "system.slice"), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	r := newResolver(Config{Root: root})
	for p, want := range map[string]string{
		"/":                              root,
		"/system.slice":                  root + "/system.slice",
		"/system.slice/nginx.service/":   root + "/system.slice/nginx.service",
		"//system.slice/./nginx.service": root + "/system.slice/nginx.service",
	} {
		if id, err := r.ID(p); err != nil || id != ino(t, want) {
			t.Errorf("ID(%q) = %d, %v, want %d", p, id, err, ino(t, want))
		}
	}
	for p, want := range map[string]string{
		"../x":                         `does not start with "/"`,
		"x":                            `does not start with "/"`,
		"":                             `does not start with "/"`,
		"/..":                          `has a ".." component`,
		"/system.slice/../../etc":      `has a ".." component`,
		"/init.scope/cgroup.procs":     "not a cgroup directory",
		"/link":                        "not a cgroup directory",
		"/missing.slice":               "no such file or directory",
		"/init.scope/cgroup.procs/sub": "lstat " + root + "/init.scope/cgroup.procs/sub",
	} {
		_, err := r.ID(p)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", p)) || !strings.Contains(err.Error(), want) {
			t.Errorf("ID(%q): error %v, want one naming the path and saying %q", p, err, want)
		}
	}
}

// A walk's view is older than the events received while it ran: it must
// not add back what was removed meanwhile, nor undo a newer Created.
func TestWalkDoesNotUndoNewerEvents(t *testing.T) {
	root := mkTree(t, testTree...)
	clock := newFakeClock()
	r := newResolver(Config{Root: root, Now: clock.Now})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	known := ino(t, filepath.Join(root, "init.scope"))
	const unknown, created = 1 << 60, 1 << 61

	r.mu.Lock()
	start := r.beginWalk()
	r.mu.Unlock()
	r.Removed(known)
	r.Removed(unknown)
	r.mu.Lock()
	r.add(created, []byte("/new.scope"), 1, r.seq, clock.Now()) // as CreatedAll does
	r.add(known, []byte("/init.scope"), 1, start, clock.Now())
	r.add(unknown, []byte("/unknown.scope"), 1, start, clock.Now())
	r.add(created, []byte("/old.scope"), 1, start, clock.Now())
	r.endWalk()
	removed, racing := r.entries[known].elem != nil, r.racing
	r.mu.Unlock()
	if !removed {
		t.Error("a walk undid a newer Removed")
	}
	if racing != nil {
		t.Errorf("racing kept after the walks: %v", racing)
	}
	h := held(r)
	if _, ok := h[unknown]; ok {
		t.Error("a walk added a cgroup removed meanwhile")
	}
	if h[created].Path != "/new.scope" {
		t.Errorf("a walk undid a newer Created: %+v", h[created])
	}
}

func TestDefaults(t *testing.T) {
	r := NewResolver(Config{})
	if r.root != "/sys/fs/cgroup" || r.maxEntries != 16384 || r.maxBytes != 16<<20 || r.retention != time.Hour ||
		r.minRescan != 10*time.Second || r.now == nil || r.owner != 0 {
		t.Errorf("defaults: %+v", r)
	}
	r = NewResolver(Config{Root: "/sys/fs/cgroup/unified/", MaxEntries: -1, MaxBytes: -1, Retention: -1, MinRescan: -1})
	if r.root != "/sys/fs/cgroup/unified" || r.maxEntries != 16384 || r.maxBytes != 16<<20 || r.retention != time.Hour || r.minRescan != 10*time.Second {
		t.Errorf("defaults for negative values: %+v", r)
	}
}

// Run with -race: every method at once, on a tree that changes.
func TestConcurrent(t *testing.T) {
	root := mkTree(t, testTree...)
	const maxEntries, maxBytes = 20, 300 // the bytes bind first: testTree's paths are long
	r := newResolver(Config{Root: root, MaxEntries: maxEntries, MaxBytes: maxBytes, Retention: 5 * time.Millisecond, MinRescan: time.Millisecond})
	if err := r.Scan(); err != nil {
		t.Fatal(err)
	}
	rootID := ino(t, root)
	var (
		mu  sync.Mutex
		ids = []uint64{rootID, 0, 1 << 62}
	)
	someID := func(rng *rand.Rand) uint64 {
		mu.Lock()
		defer mu.Unlock()
		return ids[rng.IntN(len(ids))]
	}
	var wg sync.WaitGroup
	deadline := time.Now().Add(300 * time.Millisecond)
	for w := range 2 { // mkdir and rmdir, with their events
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				p := filepath.Join(root, fmt.Sprintf("w%d-%d.scope", w, i))
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Error(err)
					return
				}
				id := ino(t, p)
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
				if w == 0 {
					r.Created(id, rootID)
				} else {
					// With a nested cgroup, its parent made by the
					// same batch, and an unknown parent now and then.
					sub := filepath.Join(p, "sub")
					if err := os.Mkdir(sub, 0o755); err != nil {
						t.Error(err)
						return
					}
					evs := []CreatedEvent{{ino(t, sub), id}, {id, rootID}}
					if i%7 == 0 {
						evs = append(evs, CreatedEvent{1 << 61, 1 << 60})
					}
					r.CreatedAll(evs)
					if err := os.Remove(sub); err != nil {
						t.Error(err)
						return
					}
					r.Removed(evs[0].ID)
				}
				if i%2 == 0 {
					if err := os.Remove(p); err != nil {
						t.Error(err)
						return
					}
					r.Removed(id)
				}
			}
		})
	}
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for time.Now().Before(deadline) {
				id := someID(rng)
				if info, ok := r.Lookup(id); ok && info.Path == "" {
					t.Errorf("Lookup(%d): found without a path", id)
				}
				if info, ok := r.Peek(id); ok && info.Path == "" {
					t.Errorf("Peek(%d): found without a path", id)
				}
				if g == 0 {
					if _, err := r.ScanIfDue(); err != nil {
						t.Error(err)
					}
				}
				if s := r.Stats(); s.Entries > maxEntries || s.Bytes > maxBytes {
					t.Errorf("%d entries, %d bytes: more than %d, %d", s.Entries, s.Bytes, maxEntries, maxBytes)
				}
			}
		})
	}
	wg.Go(func() {
		for time.Now().Before(deadline) {
			if err := r.Scan(); err != nil {
				t.Error(err)
			}
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	r.waitBackground()
	if s := r.Stats(); s.Entries > maxEntries || s.Bytes > maxBytes || s.Scans < 2 || s.Dropped == 0 {
		t.Errorf("after: %+v", s)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.walking != 0 || r.racing != nil || r.removed.Len() > len(r.entries) {
		t.Errorf("walking %d, racing %v, %d removed of %d", r.walking, r.racing, r.removed.Len(), len(r.entries))
	}
	bytes, removedBytes := 0, 0
	for _, e := range r.entries {
		bytes += len(e.info.Path)
		if e.elem != nil {
			removedBytes += len(e.info.Path)
		}
	}
	if bytes != r.bytes || removedBytes != r.removedBytes {
		t.Errorf("bytes %d, removed %d; counted %d, %d", bytes, removedBytes, r.bytes, r.removedBytes)
	}
}

// depth counts the levels below the root, alike for a held path and for
// the bytes of one being built.
func TestDepth(t *testing.T) {
	for path, want := range map[string]int{"/": 0, "/a": 1, "/system.slice/x.service": 2, "/a/b/c/d": 4} {
		if got, gotB := depth(path), depth([]byte(path)); got != want || gotB != want {
			t.Errorf("depth(%q) = %d, of its bytes %d; want %d", path, got, gotB, want)
		}
	}
}
