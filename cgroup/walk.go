package cgroup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

const (
	// maxWalkDepth is how many levels below the root a walk descends. The
	// kernel sets no limit by default (cgroup.max.depth is "max"), and a
	// delegated user could nest cgroups without end; real hierarchies are a
	// handful of levels deep.
	maxWalkDepth = 64
	// readDirBatch is how many directory entries are read at a time, so a
	// directory with a million children costs no more memory than a small
	// one.
	readDirBatch = 256
)

// dirFound is a cgroup a walk found.
type dirFound struct {
	id   uint64
	info Info
}

// walkResult is what a walk of the cgroup2 mount found.
type walkResult struct {
	found []dirFound // at most max
	// beyond counts the directories found but not kept: past max, or
	// deeper than maxWalkDepth (whose subtrees are not read).
	beyond uint64
	// complete is set when found holds every cgroup: nothing beyond, and
	// no directory failed to read for any reason but having vanished. Only
	// then may the cache take a cgroup the walk did not find as removed.
	complete bool
}

// walker walks a cgroup2 mount, depth first, without following symbolic
// links (it lstats) and without leaving the mount's file system.
type walker struct {
	dev uint64 // the root's device: directories on another are not cgroups
	max int
	res walkResult
}

// walk finds the cgroups below root, root included as "/". The error, naming
// root, is for root itself: what vanishes or fails below it is skipped.
func walk(root string, max int) (walkResult, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return walkResult{}, fmt.Errorf("cgroup root %s: %w", root, err)
	}
	ino, dev, ok := inode(fi)
	if !ok || !fi.IsDir() {
		return walkResult{}, fmt.Errorf("cgroup root %s: not a directory", root)
	}
	w := &walker{dev: dev, max: max, res: walkResult{complete: true}}
	w.add(ino, "/")
	if err := w.dir(root, "/", 0); err != nil {
		return walkResult{}, fmt.Errorf("cgroup root %s: %w", root, err)
	}
	return w.res, nil
}

func (w *walker) add(id uint64, path string) {
	if len(w.res.found) >= w.max {
		w.res.beyond++
		w.res.complete = false
		return
	}
	w.res.found = append(w.res.found, dirFound{id, Describe(path)})
}

// dir adds the directories below abs, the cgroup at path, which is depth
// levels below the root.
func (w *walker) dir(abs, path string, depth int) error {
	return eachChild(abs, w.dev, func(name string, id uint64) bool {
		child := childPath(path, name)
		if depth >= maxWalkDepth {
			w.res.beyond++
			w.res.complete = false
			return true
		}
		w.add(id, child)
		if err := w.dir(abs+"/"+name, child, depth+1); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.res.complete = false
		}
		return true
	}, func(error) { w.res.complete = false })
}

// eachChild calls fn with the name and inode of each directory in the
// directory abs that is on device dev, until fn returns false. A child that
// vanishes meanwhile is skipped; one that cannot be read otherwise is passed
// to skipped. The error is for abs itself.
func eachChild(abs string, dev uint64, fn func(name string, id uint64) bool, skipped func(error)) error {
	f, err := os.Open(abs)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		ents, err := f.ReadDir(readDirBatch)
		for _, de := range ents {
			if !de.IsDir() {
				continue
			}
			fi, err := de.Info() // lstat
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					skipped(err)
				}
				continue
			}
			id, d, ok := inode(fi)
			if !ok || !fi.IsDir() || d != dev {
				continue
			}
			if !fn(de.Name(), id) {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// childPath is the path of the cgroup name in the cgroup at parent.
func childPath(parent, name string) string {
	if parent == "/" {
		return "/" + name
	}
	return parent + "/" + name
}

// depth is how many levels below the root the cgroup at path is.
func depth(path string) int {
	if path == "/" {
		return 0
	}
	n := 0
	for i := 0; i < len(path); i++ {
		if path[i] == '/' {
			n++
		}
	}
	return n
}

// inode returns the inode number (the cgroup id) and device of fi.
func inode(fi fs.FileInfo) (ino, dev uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Ino, uint64(st.Dev), true // Dev is uint32 on some platforms
}
