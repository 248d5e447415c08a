package cgroup

import (
	"os"
	"time"
)

// The Resolver's bookkeeping: every function is called with r.mu held,
// except scan, findChild and rootDev, which read the file system (and scan
// takes the lock itself to apply what it found).

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

// scan walks the mount (startScan counted it) and applies what it found.
func (r *Resolver) scan() error {
	r.mu.Lock()
	start := r.beginWalk()
	r.mu.Unlock()

	res, err := walk(r.root, r.maxEntries)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.endWalk()
	if err != nil {
		return err
	}
	now := r.now()
	r.expire(now)
	r.stats.Dropped += res.beyond
	if res.complete {
		// Take the cgroups not found as removed first, so that they make
		// room for the ones found.
		r.gen++
		for _, f := range res.found {
			if e := r.entries[f.id]; e != nil {
				e.seen = r.gen
			}
		}
		for _, e := range r.entries {
			if e.elem == nil && e.seen != r.gen && e.seq <= start {
				r.markRemoved(e, now)
			}
		}
	}
	for _, f := range res.found {
		r.add(f.id, f.info, start, now)
	}
	return nil
}

// findChild looks for the cgroup id in the directory of the cgroup at
// parent, reading no further than it.
func (r *Resolver) findChild(parent string, id uint64) (Info, bool) {
	abs := r.root
	if parent != "/" {
		abs += parent
	}
	dev, ok := r.rootDev()
	if !ok {
		return Info{}, false
	}
	var info Info
	found := false
	_ = eachChild(abs, dev, func(name string, child uint64) bool {
		if child != id {
			return true
		}
		info, found = Describe(childPath(parent, name)), true
		return false
	}, func(error) {})
	return info, found
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

// add adds the cgroup id, found by a walk that started at seq start,
// unless the cache changed it since.
func (r *Resolver) add(id uint64, info Info, start uint64, now time.Time) {
	if e := r.entries[id]; e != nil {
		if e.seq > start {
			return
		}
		if e.elem != nil {
			r.removed.Remove(e.elem)
			e.elem, e.removedAt = nil, time.Time{}
		}
		r.seq++
		e.info, e.seq = info, r.seq
		return
	}
	if s, ok := r.racing[id]; ok && s > start {
		return
	}
	if len(r.entries) >= r.maxEntries && !r.evictOne(now) {
		r.stats.Dropped++
		return
	}
	r.seq++
	r.entries[id] = &entry{id: id, info: info, seq: r.seq}
}

// markRemoved starts e's retention.
func (r *Resolver) markRemoved(e *entry, now time.Time) {
	r.seq++
	e.seq = r.seq
	e.removedAt = now
	e.elem = r.removed.PushBack(e)
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

// evictOne drops the oldest removed entry to make room, and reports
// whether there was one.
func (r *Resolver) evictOne(now time.Time) bool {
	r.expire(now)
	if len(r.entries) < r.maxEntries {
		return true
	}
	el := r.removed.Front()
	if el == nil {
		return false
	}
	r.drop(el.Value.(*entry))
	return true
}

func (r *Resolver) drop(e *entry) {
	r.removed.Remove(e.elem)
	e.elem = nil
	delete(r.entries, e.id)
}
