package cgroup

import (
	"container/list"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The defaults of Config's fields.
const (
	defaultRoot       = "/sys/fs/cgroup"
	defaultMaxEntries = 16384
	defaultMaxBytes   = 16 << 20
	defaultRetention  = time.Hour
	defaultMinRescan  = 10 * time.Second
)

// Config configures a Resolver. Zero fields take their defaults.
type Config struct {
	// Root is the cgroup2 mount's directory, e.g. /sys/fs/cgroup or
	// /sys/fs/cgroup/unified (default /sys/fs/cgroup).
	Root string
	// MaxEntries is the most entries held (default 16384 when <= 0).
	MaxEntries int
	// MaxBytes is the most path bytes held, the sum of the entries' paths'
	// lengths (default 16 MiB when <= 0): paths are what the cache's
	// memory is mostly made of, and a delegated user may make them long
	// (255 bytes a component, 64 levels). An entry that would go beyond
	// either bound, even after evicting the removed entries, is not added.
	MaxBytes int
	// MaxUntrusted is the most entries held of cgroups below a directory
	// not owned by root, a user's delegated subtree (default MaxEntries/4
	// when <= 0); their paths hold at most MaxBytes/4. A user making
	// cgroups by the thousand, or long paths, fills this share, not the
	// cache, and root's cgroups (the system's units, containers and pods)
	// stay named. When the share is full, its removed entries are evicted
	// first, the oldest removal first, as the cache's are.
	MaxUntrusted int
	// Retention is how long a removed cgroup stays named (default 1h when
	// <= 0), so that connections reported after their cgroup is gone,
	// which is when a short-lived job's are, are still labelled.
	Retention time.Duration
	// MinRescan is the least time between two full walks not asked for by
	// Scan: those triggered by an unknown id (Lookup), by mkdir events
	// under unknown parents (CreatedAll) and by ScanIfDue (default 10s when
	// <= 0). Those run on callers that hold other locks (the tracer's
	// event drain, its collection), so ids the cache misses must not make
	// them walk the tree over and over.
	MinRescan time.Duration
	// Now is the clock (default time.Now; tests give a fake one).
	Now func() time.Time
}

// Stats counts what a Resolver did, for its metrics.
type Stats struct {
	// Entries is the number of entries held, removed cgroups still named
	// included.
	Entries int
	// Bytes is the sum of their paths' lengths (bounded by MaxBytes).
	Bytes int
	// Misses counts the lookups that found no cgroup.
	Misses uint64
	// Scans counts the full walks of the cgroup2 mount.
	Scans uint64
	// Dropped counts the cgroups not held: not added because the cache was
	// full (MaxEntries or MaxBytes) of cgroups not removed, or its share
	// of a user's cgroups (MaxUntrusted) was, or deeper than the walks go
	// (64 levels below the root). A walk counts each it meets again.
	Dropped uint64
	// Untrusted is the number of entries held below a directory not
	// owned by root (at most MaxUntrusted).
	Untrusted int
}

// Resolver names cgroup ids: a bounded cache, filled by walking the
// cgroup2 mount and kept current from the kernel's mkdir/rmdir events.
// It is safe for concurrent use. It never holds its lock while reading the
// file system, so lookups of known ids are not held up by a walk.
type Resolver struct {
	root       string
	maxEntries int
	maxBytes   int
	// user is the share of the entries below a directory not owned by
	// root (MaxUntrusted).
	user      userShare
	retention time.Duration
	minRescan time.Duration
	now       func() time.Time
	// owner is the uid whose directories are trusted: root's. Tests that
	// run unprivileged set their own, as they cannot make root's.
	owner uint32

	// listings and childStats count the directories CreatedAll listed and
	// the children it statted, for the tests: the point of CreatedAll is
	// that they stay small.
	listings, childStats atomic.Uint64

	// background counts the walks Lookup started, running on their own.
	background sync.WaitGroup
	mu         sync.Mutex
	entries    map[uint64]*entry
	// bytes is the sum of the entries' paths' lengths, removedBytes that of
	// the removed ones'.
	bytes, removedBytes int
	// removed holds the removed entries (*entry), oldest removal first:
	// they expire in that order, and are evicted in that order when the
	// cache is full.
	removed list.List
	// seq counts the changes to entries. A walk (or a CreatedAll's
	// listings) notes seq when it starts and does not undo a change made
	// after that, as its view of the file system may be older than the
	// change.
	seq uint64
	// walking counts the walks and listings in flight; while there are
	// any, racing holds the ids removed that the cache did not have (with
	// the seq of the removal), so a walk that saw them just before does not
	// add them back. At most maxEntries, and dropped when walking is 0.
	walking int
	racing  map[uint64]uint64
	// gen numbers the walks in the order they start, to mark the entries
	// each found.
	gen      uint64
	scanned  bool      // a walk was started
	lastScan time.Time // when the last walk started
	stats    Stats
}

// entry is a cgroup the cache names.
type entry struct {
	id uint64
	// info is DescribeTrusted(path, trusted): the labels come from the
	// part of the path whose directories are all owned by root.
	info    Info
	trusted uint8  // at most maxWalkDepth
	seq     uint64 // Resolver.seq of its last change (added or removed)
	seen    uint64 // the Resolver.gen of the last walk that found it
	// removedAt is when it was removed, and elem its element in
	// Resolver.removed; elem is nil while the cgroup exists. userElem is
	// its element in the user share's removed list, if it is the share's.
	removedAt time.Time
	elem      *list.Element
	userElem  *list.Element
}

// NewResolver returns an empty Resolver; Scan fills it.
func NewResolver(cfg Config) *Resolver {
	r := &Resolver{
		root:       cfg.Root,
		maxEntries: cfg.MaxEntries,
		maxBytes:   cfg.MaxBytes,
		user:       userShare{max: cfg.MaxUntrusted},
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
	if r.maxBytes <= 0 {
		r.maxBytes = defaultMaxBytes
	}
	if r.user.max <= 0 {
		r.user.max = max(r.maxEntries/4, 1)
	}
	r.user.maxBytes = max(r.maxBytes/4, 1)
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

// Scan walks the cgroup2 mount and adds every cgroup found (an entry of
// the same id at another path is replaced: an id removed and reused is a
// new cgroup). When the walk found every cgroup, the cgroups held but not
// found are taken as removed (their rmdir event was lost): they stay named
// for Retention. The error, naming Root, is for Root itself; what vanishes
// during the walk is skipped.
func (r *Resolver) Scan() error {
	r.mu.Lock()
	r.startScan(r.now())
	r.mu.Unlock()
	return r.scan()
}

// ScanIfDue is Scan unless a walk started less than MinRescan ago, and
// reports whether it walked. It is for the caller that learns mkdir or
// rmdir events were lost: it cannot tell which, and a burst of losses must
// not make it walk the tree over and over (a Lookup missing a cgroup made
// meanwhile walks again once MinRescan has passed).
func (r *Resolver) ScanIfDue() (bool, error) {
	r.mu.Lock()
	due := r.claimRescan(r.now())
	r.mu.Unlock()
	if !due {
		return false, nil
	}
	return true, r.scan()
}

// RescanDue reports whether ScanIfDue would walk now.
func (r *Resolver) RescanDue() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.scanned || r.now().Sub(r.lastScan) >= r.minRescan
}

// CreatedEvent is a cgroup's mkdir event: its id and its parent's.
type CreatedEvent struct{ ID, Parent uint64 }

// maxListedParents bounds the directories one CreatedAll lists: beyond it,
// one walk is cheaper, and the caller (holding its own lock) is not held
// up by one listing after another.
const maxListedParents = 64

// CreatedAll adds the cgroups just made: the mkdir events of one read of
// the kernel's event buffer (a few thousand at most), in the order made.
//
// It reads each parent's directory once however many of the events are
// its children, taking their ids from the directory entries themselves and
// statting only the children wanted: a flood of mkdirs in one directory
// costs one listing, not one per event, each reading and statting every
// sibling (the cost of n events among n siblings was n²). A parent is
// known when the cache holds it, or when an event of the batch made it
// and its own parent is known (mkdir -p, or a pod's slice and its
// container's scope made together); the known ones are listed in that
// order, parents first.
//
// When a parent is not known, or more than 64 would be listed, the whole
// mount is also walked once, in the background (unless a walk started
// less than MinRescan ago): the known parents (the first 64) are listed
// now, the rest named by that walk. Events of cgroups already named and
// of id 0 are skipped.
func (r *Resolver) CreatedAll(evs []CreatedEvent) {
	r.mu.Lock()
	now := r.now()
	r.expire(now)
	b := r.planCreated(evs)
	if b == nil {
		r.mu.Unlock()
		return
	}
	if (b.unknown || b.listable > maxListedParents) && r.claimRescan(now) {
		// In the background, as Lookup's: the caller (the tracer's
		// drain, which scrapes wait for) lists the known parents now.
		r.startBackgroundScan()
	}
	start := r.beginWalk()
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.endWalk()
		r.mu.Unlock()
	}()

	dev, ok := r.rootDev()
	if !ok {
		return
	}
	buf := make([]byte, listBufSize)
	var path []byte
	for listed := 0; len(b.ready) > 0 && listed < maxListedParents; {
		g := b.ready[0]
		b.ready = b.ready[1:]
		d := depth(g.path)
		if d >= maxWalkDepth {
			r.mu.Lock()
			r.stats.Dropped += uint64(len(g.children))
			r.mu.Unlock()
			continue
		}
		listed++
		left := len(g.children)
		r.listChildren(g.path, dev, buf, func(ino uint64) bool {
			return b.parentOf[ino] == g
		}, func(name []byte, st *unix.Stat_t) bool {
			b.parentOf[st.Ino] = nil // found: a name listed twice is not added twice
			path = childPath(path[:0], g.path, name)
			trusted := childTrust(d, g.trusted, st.Uid, r.owner)
			r.mu.Lock()
			r.add(st.Ino, path, trusted, start, r.now())
			r.mu.Unlock()
			if cg := b.groups[st.Ino]; cg != nil {
				cg.path, cg.trusted = string(path), trusted
				b.ready = append(b.ready, cg)
			}
			left--
			return left > 0
		})
	}
}

// createdBatch is a CreatedAll's events grouped by parent.
type createdBatch struct {
	groups   map[uint64]*createdGroup // by parent id
	parentOf map[uint64]*createdGroup // by event id: the group it is in
	// ready holds the groups whose parent's path is known, to list in
	// that order.
	ready []*createdGroup
	// listable counts the groups whose parent is known or will be; unknown
	// is set when there are others.
	listable int
	unknown  bool
}

// createdGroup is the events of one parent.
type createdGroup struct {
	parent   uint64
	children []uint64
	path     string // the parent's path, once known
	trusted  int    // how many of its components are trusted
	state    uint8  // planCreated's: not seen, being resolved, resolved
	listable bool
}

const (
	groupNew = iota
	groupResolving
	groupResolved
)

// planCreated groups evs by parent and tells which parents are known; nil
// when there is nothing to add.
func (r *Resolver) planCreated(evs []CreatedEvent) *createdBatch {
	var b *createdBatch
	var order []*createdGroup
	for _, ev := range evs {
		if ev.ID == 0 {
			continue
		}
		if e := r.entries[ev.ID]; e != nil && e.elem == nil {
			continue // a walk found it first
		}
		if b == nil {
			b = &createdBatch{groups: map[uint64]*createdGroup{}, parentOf: map[uint64]*createdGroup{}}
		}
		if b.parentOf[ev.ID] != nil {
			continue
		}
		g := b.groups[ev.Parent]
		if g == nil {
			g = &createdGroup{parent: ev.Parent}
			b.groups[ev.Parent] = g
			order = append(order, g)
		}
		g.children = append(g.children, ev.ID)
		b.parentOf[ev.ID] = g
	}
	if b == nil {
		return nil
	}
	// A group is listable when its parent is held, or is an event of a
	// listable group: follow each chain of parents up to one resolved.
	var chain []*createdGroup
	for _, g := range order {
		chain = chain[:0]
		listable := false
		for cur := g; cur != nil; cur = b.parentOf[cur.parent] {
			if cur.state == groupResolved {
				listable = cur.listable
				break
			}
			if cur.state == groupResolving {
				break // a cycle: ids the kernel did not give
			}
			cur.state = groupResolving
			chain = append(chain, cur)
			if p := r.entries[cur.parent]; p != nil && p.elem == nil {
				cur.path, cur.trusted = p.info.Path, int(p.trusted)
				b.ready = append(b.ready, cur)
				listable = true
				break
			}
		}
		for _, c := range chain {
			c.state, c.listable = groupResolved, listable
		}
		if listable {
			b.listable++
		} else {
			b.unknown = true
		}
	}
	return b
}

// Created adds the cgroup id, just made in the cgroup parent: CreatedAll of
// one event.
func (r *Resolver) Created(id, parent uint64) {
	r.CreatedAll([]CreatedEvent{{ID: id, Parent: parent}})
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

// Lookup returns what the cache knows of the cgroup id. An unknown id is a
// miss (counted), and starts a walk of the mount in the background if the
// last walk started at least MinRescan ago, so that the cgroup's later
// connections find it named: the caller (a scrape, holding its locks) does
// not wait for a walk, 250 ms at 16,000 cgroups (BENCHMARKS.md §16). Id 0
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
	r.stats.Misses++
	if r.claimRescan(now) {
		r.startBackgroundScan()
	}
	r.mu.Unlock()
	return Info{}, false
}

// startBackgroundScan walks the mount in a goroutine of its own (the walk
// claimed: claimRescan). Callers hold r.mu.
func (r *Resolver) startBackgroundScan() {
	r.background.Add(1)
	go func() {
		defer r.background.Done()
		_ = r.scan() // an unreadable root: nothing to add, and no one to tell
	}()
}

// waitBackground waits for the walks Lookup started (tests).
func (r *Resolver) waitBackground() { r.background.Wait() }

// Peek returns what the cache holds of the cgroup id, and nothing more: it
// never walks and never counts a miss. It is for the caller that checks a
// cgroup it was just told of (a mkdir event, after CreatedAll) against a
// list of paths: such a check is no connection left unlabelled (what
// Misses counts), and must not make that caller, holding its own lock,
// walk the tree.
func (r *Resolver) Peek(id uint64) (Info, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(r.now())
	if e := r.entries[id]; e != nil {
		return e.info, true
	}
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
	s.Bytes = r.bytes
	s.Untrusted = r.user.n
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
