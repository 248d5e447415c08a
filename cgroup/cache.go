package cgroup

import (
	"container/list"
	"os"
	"time"
)

// The Resolver's bookkeeping: every function is called with r.mu held,
// except scan, listChildren and rootDev, which read the file system (scan's
// walker takes the lock itself for each cgroup it finds, never across a
// system call).

// claimRescan starts a walk unless one started less than MinRescan ago,
// and reports whether it did.
func (r *Resolver) claimRescan(now time.Time) bool {
	if r.scanned && now.Sub(r.lastScan) < r.minRescan {
		return false
	}
	r.startScan(now)
	return true
}

// startScan notes a walk starting now.
func (r *Resolver) startScan(now time.Time) {
	r.scanned = true
	r.lastScan = now
	r.stats.Scans++
}

// scan walks the mount (startScan counted it), the walker adding what it
// finds as it goes. When the walk found every cgroup, the cgroups held but
// not found are taken as removed (their rmdir event was lost): they stay
// named for Retention. That is decided only at the end, so a walk of a
// cache full of such cgroups drops the new ones it meets (counted in
// Dropped) and leaves them to the next walk: the price of not holding what
// it found until the end, which would double the cache's memory.
func (r *Resolver) scan() error {
	r.mu.Lock()
	start := r.beginWalk()
	r.gen++
	w := &walker{r: r, start: start, gen: r.gen}
	r.mu.Unlock()

	err := w.walk()
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.endWalk()
	if err != nil {
		return err
	}
	r.stats.Dropped += w.beyond
	if w.complete {
		now := r.now()
		r.expire(now)
		for _, e := range r.entries {
			// seen < w.gen: not found by this walk nor by one started
			// after it (walks may overlap; a later one's finding is as
			// good). seq <= start: not added or changed since it started.
			if e.elem == nil && e.seen < w.gen && e.seq <= start {
				r.markRemoved(e, now)
			}
		}
	}
	return nil
}

// rootDev returns the device of the mount's root directory.
func (r *Resolver) rootDev() (uint64, bool) {
	fi, err := os.Lstat(r.root)
	if err != nil {
		return 0, false
	}
	_, dev, ok := inode(fi)
	return dev, ok
}

// beginWalk notes a walk or listing starting, and returns the seq its view
// of the file system is from.
func (r *Resolver) beginWalk() uint64 {
	r.walking++
	return r.seq
}

func (r *Resolver) endWalk() {
	r.walking--
	if r.walking == 0 {
		r.racing = nil
	}
}

// add names the cgroup id at path, found by a walk or listing whose view is
// from seq start, unless the cache changed it since; the first trusted
// components of path are trusted (DescribeTrusted). It returns the entry,
// nil when the cgroup is not held.
//
// path is copied only when the entry is new or its path changed (the id
// was reused): walks mostly find cgroups the cache names already, and
// replacing their paths with fresh copies would allocate a second set of
// strings each time.
func (r *Resolver) add(id uint64, path []byte, trusted int, start uint64, now time.Time) *entry {
	e := r.entries[id]
	if e != nil {
		if e.seq > start {
			return nil
		}
		if e.info.Path == string(path) { // compared without a copy
			changed := false
			if e.elem != nil {
				r.unmarkRemoved(e)
				changed = true
			}
			if int(e.trusted) != trusted {
				// Its owner changed since (a directory chowned).
				r.user.leave(e)
				e.info = DescribeTrusted(e.info.Path, trusted)
				e.trusted = uint8(trusted)
				if e.untrusted() && !r.user.room(len(e.info.Path), r) {
					r.user.join(e) // as drop uncounts it
					r.drop(e)
					r.stats.Dropped++
					return nil
				}
				r.user.join(e)
				changed = true
			}
			if changed {
				r.seq++
				e.seq = r.seq
			}
			return e
		}
		r.drop(e) // the cgroup the id named is gone
	} else if s, ok := r.racing[id]; ok && s > start {
		return nil
	}
	r.expire(now)
	if trusted < depth(path) && !r.user.room(len(path), r) {
		r.stats.Dropped++
		return nil
	}
	if !r.makeRoom(len(path)) {
		r.stats.Dropped++
		return nil
	}
	p := string(path)
	r.seq++
	e = &entry{id: id, info: DescribeTrusted(p, trusted), trusted: uint8(trusted), seq: r.seq}
	r.entries[id] = e
	r.bytes += len(p)
	r.user.join(e)
	return e
}

// userShare bounds the entries below a directory not owned by root (a
// user's delegated subtree, whose cgroups the user makes as many and as
// long as they like): at most max of them, of maxBytes of paths.
type userShare struct {
	max, maxBytes int
	n, bytes      int
	removedBytes  int
	removed       list.List // its removed entries, oldest removal first
}

// untrusted says whether e is below a directory not owned by root.
func (e *entry) untrusted() bool { return int(e.trusted) < depth(e.info.Path) }

// room makes room in the share for an entry of n path bytes, evicting its
// oldest removed entries if that is enough (nothing when it is not), and
// reports whether there is room.
func (u *userShare) room(n int, r *Resolver) bool {
	if u.n-u.removed.Len() >= u.max || u.bytes-u.removedBytes+n > u.maxBytes {
		return false
	}
	for u.n >= u.max || u.bytes+n > u.maxBytes {
		r.drop(u.removed.Front().Value.(*entry))
	}
	return true
}

// join counts e in the share if it is the share's.
func (u *userShare) join(e *entry) {
	if e.untrusted() {
		u.n++
		u.bytes += len(e.info.Path)
	}
}

// leave uncounts e from the share if it is the share's (and is not
// removed: drop unmarks it first).
func (u *userShare) leave(e *entry) {
	if e.untrusted() {
		u.n--
		u.bytes -= len(e.info.Path)
	}
}

// makeRoom makes room for an entry of n path bytes, evicting the oldest
// removed entries if that is enough, and reports whether there is room.
// It evicts nothing when even evicting every removed entry would not do.
// The expired entries are gone already (add expires them first).
func (r *Resolver) makeRoom(n int) bool {
	if len(r.entries)-r.removed.Len() >= r.maxEntries || r.bytes-r.removedBytes+n > r.maxBytes {
		return false
	}
	for len(r.entries) >= r.maxEntries || r.bytes+n > r.maxBytes {
		r.drop(r.removed.Front().Value.(*entry))
	}
	return true
}

// markRemoved starts e's retention.
func (r *Resolver) markRemoved(e *entry, now time.Time) {
	r.seq++
	e.seq = r.seq
	e.removedAt = now
	e.elem = r.removed.PushBack(e)
	r.removedBytes += len(e.info.Path)
	if e.untrusted() {
		e.userElem = r.user.removed.PushBack(e)
		r.user.removedBytes += len(e.info.Path)
	}
}

// unmarkRemoved ends e's retention: it exists after all.
func (r *Resolver) unmarkRemoved(e *entry) {
	r.removed.Remove(e.elem)
	e.elem, e.removedAt = nil, time.Time{}
	r.removedBytes -= len(e.info.Path)
	if e.userElem != nil {
		r.user.removed.Remove(e.userElem)
		e.userElem = nil
		r.user.removedBytes -= len(e.info.Path)
	}
}

// expire drops the removed entries whose retention is over. The oldest
// removal comes first, so the work is what expired (each entry once).
func (r *Resolver) expire(now time.Time) {
	for el := r.removed.Front(); el != nil; el = r.removed.Front() {
		e := el.Value.(*entry)
		if now.Sub(e.removedAt) < r.retention {
			return
		}
		r.drop(e)
	}
}

// drop forgets e, removed or not.
func (r *Resolver) drop(e *entry) {
	if e.elem != nil {
		r.unmarkRemoved(e)
	}
	delete(r.entries, e.id)
	r.bytes -= len(e.info.Path)
	r.user.leave(e)
}
