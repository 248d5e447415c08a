package cgroup

import (
	"container/list"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The defaults of Config's fields.
const (
	defaultRoot       = "/sys/fs/cgroup"
	defaultMaxEntries = 16384
	defaultRetention  = time.Hour
	defaultMinRescan  = time.Second
)

// Config configures a Resolver. Zero fields take their defaults.
type Config struct {
	// Root is the cgroup2 mount's directory, e.g. /sys/fs/cgroup or
	// /sys/fs/cgroup/unified (default /sys/fs/cgroup).
	Root string
	// MaxEntries is the most entries held (default 16384 when <= 0).
	MaxEntries int
	// Retention is how long a removed cgroup stays named (default 1h when
	// <= 0), so that connections reported after their cgroup is gone,
	// which is when a short-lived job's are, are still labelled.
	Retention time.Duration
	// MinRescan is the least time between two full walks triggered by an
	// unknown id (default 1s when <= 0): ids the cache misses cannot make
	// the resolver walk the tree over and over.
	MinRescan time.Duration
	// Now is the clock (default time.Now; tests give a fake one).
	Now func() time.Time
}

// Stats counts what a Resolver did, for its metrics.
type Stats struct {
	// Entries is the number of entries held, removed cgroups still named
	// included.
	Entries int
	// Misses counts the lookups that found no cgroup.
	Misses uint64
	// Scans counts the full walks of the cgroup2 mount.
	Scans uint64
	// Dropped counts the cgroups not held: not added because the cache was
	// full of cgroups not removed, found by a walk beyond MaxEntries, or
	// deeper than the walks go (64 levels below the root).
	Dropped uint64
}

// Resolver names cgroup ids: a bounded cache, filled by walking the
// cgroup2 mount and kept current from the kernel's mkdir/rmdir events.
// It is safe for concurrent use. It never holds its lock while reading the
// file system, so lookups of known ids are not held up by a walk.
type Resolver struct {
	root       string
	maxEntries int
	retention  time.Duration
	minRescan  time.Duration
	now        func() time.Time

	mu      sync.Mutex
	entries map[uint64]*entry
	// removed holds the removed entries (*entry), oldest removal first:
	// they expire in that order, and are evicted in that order when the
	// cache is full.
	removed list.List
	// seq counts the changes to entries. A walk (or a Created's listing)
	// notes seq when it starts and does not undo a change made after that,
	// as its view of the file system may be older than the change.
	seq uint64
	// walking counts the walks and listings in flight; while there are
	// any, racing holds the ids removed that the cache did not have (with
	// the seq of the removal), so a walk that saw them just before does not
	// add them back. At most maxEntries, and dropped when walking is 0.
	walking int
	racing  map[uint64]uint64
	// gen numbers the complete walks, to mark the entries each found.
	gen      uint64
	scanned  bool      // a walk was started
	lastScan time.Time // when the last walk started
	stats    Stats
}

// entry is a cgroup the cache names.
type entry struct {
	id   uint64
	info Info
	seq  uint64 // Resolver.seq of its last change (added or removed)
	seen uint64 // the Resolver.gen of the last complete walk that found it
	// removedAt is when it was removed, and elem its element in
	// Resolver.removed; elem is nil while the cgroup exists.
	removedAt time.Time
	elem      *list.Element
}

// NewResolver returns an empty Resolver; Scan fills it.
func NewResolver(cfg Config) *Resolver {
	r := &Resolver{
		root:       cfg.Root,
		maxEntries: cfg.MaxEntries,
		retention:  cfg.Retention,
		minRescan:  cfg.MinRescan,
		now:        cfg.Now,
		entries:    map[uint64]*entry{},
	}
	if r.root == "" {
		r.root = defaultRoot
	}
	r.root = filepath.Clean(r.root)
	if r.maxEntries <= 0 {
		r.maxEntries = defaultMaxEntries
	}
	if r.retention <= 0 {
		r.retention = defaultRetention
	}
	if r.minRescan <= 0 {
		r.minRescan = defaultMinRescan
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

// Scan walks the cgroup2 mount and adds every cgroup found, replacing an
// entry of the same id (an id removed and reused is a new cgroup). When the
// walk found every cgroup, the cgroups held but not found are taken as
// removed (their rmdir event was lost): they stay named for Retention. The
// error, naming Root, is for Root itself; what vanishes during the walk is
// skipped.
func (r *Resolver) Scan() error {
	r.mu.Lock()
	r.startScan(r.now())
	r.mu.Unlock()
	return r.scan()
}

// Created adds the cgroup id, just made in the cgroup parent. When the
// parent is known, only its directory is read, up to the new one; else the
// whole mount is walked, unless a walk started less than MinRescan ago (a
// later Lookup's walk will find it).
func (r *Resolver) Created(id, parent uint64) {
	if id == 0 {
		return
	}
	r.mu.Lock()
	now := r.now()
	r.expire(now)
	p := r.entries[parent]
	if p == nil {
		rescan := r.claimRescan(now)
		r.mu.Unlock()
		if rescan {
			_ = r.scan() // an unreadable root: nothing to add, and no one to tell
		}
		return
	}
	parentPath := p.info.Path
	if depth(parentPath) >= maxWalkDepth {
		r.stats.Dropped++
		r.mu.Unlock()
		return
	}
	start := r.beginWalk()
	r.mu.Unlock()

	info, found := r.findChild(parentPath, id)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.endWalk()
	if found {
		r.add(id, info, start, r.now())
	}
}

// Removed notes that the cgroup id was removed. It stays named for
// Retention, so that the connections of its last moments are labelled.
func (r *Resolver) Removed(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.expire(now)
	e := r.entries[id]
	switch {
	case e != nil && e.elem == nil:
		r.markRemoved(e, now)
	case e == nil && r.walking > 0 && len(r.racing) < r.maxEntries:
		r.seq++
		if r.racing == nil {
			r.racing = map[uint64]uint64{}
		}
		r.racing[id] = r.seq
	}
}

// Lookup returns what the cache knows of the cgroup id. An unknown id makes
// it walk the mount once, if the last walk started at least MinRescan ago,
// and look again; each lookup that still finds nothing counts a miss. Id 0
// (no cgroup) is never found and never walks.
func (r *Resolver) Lookup(id uint64) (Info, bool) {
	r.mu.Lock()
	if id == 0 {
		r.stats.Misses++
		r.mu.Unlock()
		return Info{}, false
	}
	now := r.now()
	r.expire(now)
	if e := r.entries[id]; e != nil {
		info := e.info // a walk may replace it once unlocked
		r.mu.Unlock()
		return info, true
	}
	rescan := r.claimRescan(now)
	r.mu.Unlock()

	if rescan {
		_ = r.scan() // an unreadable root: a miss
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.entries[id]; e != nil {
		return e.info, true
	}
	r.stats.Misses++
	return Info{}, false
}

// ID returns the id of the cgroup at path (relative to Root, starting with
// "/"): the inode number of its directory. A path not starting with "/",
// with a ".." component, or naming anything but a directory on Root's file
// system is an error; every error names path.
func (r *Resolver) ID(path string) (uint64, error) {
	if !strings.HasPrefix(path, "/") {
		return 0, fmt.Errorf("cgroup path %q: does not start with \"/\"", path)
	}
	for _, c := range strings.Split(path, "/") {
		if c == ".." {
			return 0, fmt.Errorf("cgroup path %q: has a \"..\" component", path)
		}
	}
	abs := filepath.Join(r.root, path)
	fi, err := os.Lstat(abs)
	if err != nil {
		return 0, fmt.Errorf("cgroup path %q: %w", path, err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("cgroup path %q: not a cgroup directory (%s is a %s)", path, abs, fileKind(fi.Mode()))
	}
	ino, dev, ok := inode(fi)
	if !ok {
		return 0, fmt.Errorf("cgroup path %q: no inode number for %s", path, abs)
	}
	// An intermediate symbolic link is followed by lstat: whatever it
	// leads to is no cgroup unless it is on the mount's file system.
	if rootDev, ok := r.rootDev(); !ok || rootDev != dev {
		return 0, fmt.Errorf("cgroup path %q: not a cgroup directory (%s is not on the file system of %s)", path, abs, r.root)
	}
	return ino, nil
}

// Stats returns the counts so far.
func (r *Resolver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.now())
	s := r.stats
	s.Entries = len(r.entries)
	return s
}

// fileKind names what a non-directory is, for errors.
func fileKind(m os.FileMode) string {
	switch {
	case m.Type() == 0:
		return "regular file"
	case m&os.ModeSymlink != 0:
		return "symbolic link"
	default:
		return "special file"
	}
}
