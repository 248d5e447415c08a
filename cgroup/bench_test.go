package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// The resolver's costs at the size of its bound (BENCHMARKS.md §16): a
// walk of 16,000 cgroups (at start-up, and at most every MinRescan for a
// cgroup not known, in the background), a drain's 256 new
// cgroups named at once, and a lookup, once per connection. The tree is
// made in a temporary directory; CONNTRACE_BENCH_CGROUP_ROOT=<a directory
// on cgroup2> makes it there instead (as root), as real cgroups, and
// removes it after.

const (
	benchSlices = 16
	benchScopes = 1000 // per slice: 16,000 cgroups and the slices
)

// benchRoot returns an empty directory for a benchmark's tree, removed
// with what is in it at the end.
func benchRoot(b *testing.B) string {
	b.Helper()
	parent := os.Getenv("CONNTRACE_BENCH_CGROUP_ROOT")
	if parent == "" {
		return b.TempDir()
	}
	root, err := os.MkdirTemp(parent, "conntrace-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { removeDirs(b, root) })
	return root
}

// removeDirs removes the directory tree at dir, deepest first, with rmdir
// alone: a cgroup's directory is removed with its interface files in it.
func removeDirs(b *testing.B, dir string) {
	b.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		b.Error(err)
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeDirs(b, filepath.Join(dir, e.Name()))
		}
	}
	if err := syscall.Rmdir(dir); err != nil {
		b.Error(err)
	}
}

// benchTree makes slices of scopes below root: kubepods-shaped names, a
// few hundred bytes of path each as on a node.
func benchTree(b *testing.B, root string, slices, scopes int) (parents []string) {
	b.Helper()
	for s := range slices {
		slice := filepath.Join(root, "kubepods.slice", fmt.Sprintf("kubepods-burstable-pod%08x_aaaa_bbbb_cccc_0123456789ab.slice", s))
		if err := os.MkdirAll(slice, 0o755); err != nil {
			b.Fatal(err)
		}
		parents = append(parents, slice)
		for c := range scopes {
			if err := os.Mkdir(filepath.Join(slice, fmt.Sprintf("cri-containerd-%064x.scope", s*scopes+c)), 0o755); err != nil {
				b.Fatal(err)
			}
		}
	}
	return parents
}

// BenchmarkScan: a walk of the whole tree, every cgroup already named (a
// rescan: what a cgroup not known costs, at most every 10 s).
func BenchmarkScan(b *testing.B) {
	root := benchRoot(b)
	benchTree(b, root, benchSlices, benchScopes)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := NewResolver(Config{Root: root})
	if err := r.Scan(); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := r.Scan(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	s := r.Stats()
	b.ReportMetric(float64(s.Entries), "cgroups")
	b.ReportMetric(float64(s.Bytes)/float64(s.Entries), "pathbytes/cgroup")
	b.ReportMetric(heap/float64(s.Entries), "heapbytes/cgroup") // the names held, all told
}

// BenchmarkCreatedAll: a drain's 256 new cgroups, 16 in each of 16
// parents, named at once (the tree holding 16,000 others); each round's
// cgroups are removed, outside the timing.
func BenchmarkCreatedAll(b *testing.B) {
	root := benchRoot(b)
	parents := benchTree(b, root, benchSlices, benchScopes)
	r := NewResolver(Config{Root: root})
	if err := r.Scan(); err != nil {
		b.Fatal(err)
	}
	parentIDs := make([]uint64, len(parents))
	for i, p := range parents {
		parentIDs[i] = ino(b, p)
	}
	evs := make([]CreatedEvent, 0, 256)
	var dirs []string
	round := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		evs, dirs = evs[:0], dirs[:0]
		for i, p := range parents {
			for j := range 16 {
				d := filepath.Join(p, fmt.Sprintf("new-%d-%d.scope", round, j))
				if err := os.Mkdir(d, 0o755); err != nil {
					b.Fatal(err)
				}
				dirs = append(dirs, d)
				evs = append(evs, CreatedEvent{ID: ino(b, d), Parent: parentIDs[i]})
			}
		}
		round++
		b.StartTimer()
		r.CreatedAll(evs)
		b.StopTimer()
		for i, d := range dirs {
			if _, ok := r.Peek(evs[i].ID); !ok {
				b.Fatalf("%s not named", d)
			}
			if err := syscall.Rmdir(d); err != nil {
				b.Fatal(err)
			}
			r.Removed(evs[i].ID)
		}
		b.StartTimer()
	}
}

// BenchmarkLookup: naming a known cgroup, once per connection.
func BenchmarkLookup(b *testing.B) {
	root := benchRoot(b)
	benchTree(b, root, 4, 256)
	r := NewResolver(Config{Root: root})
	if err := r.Scan(); err != nil {
		b.Fatal(err)
	}
	ids := make([]uint64, 0, len(r.entries))
	for id := range r.entries {
		ids = append(ids, id)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := r.Lookup(ids[i%len(ids)]); !ok {
			b.Fatal("not named")
		}
		i++
	}
}
